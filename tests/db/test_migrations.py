"""Migrations go up and down on SQLite and PostgreSQL, and leave the schema the ORM expects."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from konan.core.errors import SchemaOutOfDate
from konan.db import migrate
from konan.db.engine import make_engine
from konan.db.metadata import metadata


def test_upgrade_then_downgrade_to_base_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert set(metadata.tables) <= tables

    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}

    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    engine.dispose()


def test_migrated_schema_matches_the_orm(db_url: str) -> None:
    """A model change without a migration fails here, not in production."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    engine.dispose()


def test_ensure_current_names_the_command_to_run(db_url: str) -> None:
    engine = make_engine(db_url)
    with pytest.raises(SchemaOutOfDate, match="konan admin db upgrade"):
        migrate.ensure_current(engine)
    migrate.upgrade(engine)
    migrate.ensure_current(engine)
    engine.dispose()
