"""Declarative base, engine and unit of work. `konan.db.metadata` is what Alembic reads."""
