"""Run and check Alembic migrations from code (CLI `konan admin db …`, `konan up`, server start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from konan.core.errors import ConfigError, SchemaOutOfDate

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(engine: Engine) -> Config:
    ini = ROOT / "alembic.ini"
    if not ini.exists():
        raise ConfigError(
            f"migrations not found next to the konan package ({ini}); install Konan from its "
            "source checkout with `pip install -e .`"
        )
    cfg = Config(str(ini))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def ensure_current(engine: Engine) -> None:
    """Refuse to run on a database behind (or ahead of) the code's migrations."""
    current, head = current_revision(engine), head_revision(engine)
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at {current or 'nothing (empty database)'} but this Konan "
            f"needs {head}; run `konan admin db upgrade` first"
        )
