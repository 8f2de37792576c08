"""prediction_logs inputs and outputs as json on PostgreSQL (was jsonb)

The prediction log is written far more than it is read and nothing queries inside these
columns; json keeps the text as sent, without building jsonb's binary form on every insert.
SQLite stores JSON as text either way: nothing changes there.

Revision ID: 5f2c7a1e9d40
Revises: ac4f8a624cbe
Create Date: 2026-11-30 07:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5f2c7a1e9d40"
down_revision: str | None = "ac4f8a624cbe"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("inputs", "outputs")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in _COLUMNS:
        op.alter_column(
            "prediction_logs",
            column,
            type_=sa.JSON(),
            existing_type=postgresql.JSONB(astext_type=sa.Text()),
            existing_nullable=True,
            postgresql_using=f"{column}::json",
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in _COLUMNS:
        op.alter_column(
            "prediction_logs",
            column,
            type_=postgresql.JSONB(astext_type=sa.Text()),
            existing_type=sa.JSON(),
            existing_nullable=True,
            postgresql_using=f"{column}::jsonb",
        )
