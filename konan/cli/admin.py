"""`konan admin …`: operator commands that act on the database directly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from konan.cli.common import console, fail, settings_from

admin_app = typer.Typer(help="Operator commands (database, audit log).", no_args_is_help=True)
db_app = typer.Typer(help="Schema migrations.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
admin_app.add_typer(db_app, name="db")
admin_app.add_typer(audit_app, name="audit")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="KONAN_DATA_DIR", help="where embedded state lives"),
]


def _engine(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from konan.db.engine import make_engine

    settings = settings_from(data_dir)
    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.database_url, settings)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    data_dir: DataDir = None,
) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from konan.db import migrate

    engine = _engine(data_dir)
    migrate.upgrade(engine, revision)
    console.print(f"database at {migrate.current_revision(engine)}")
    engine.dispose()


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="target revision, e.g. -1 or base")],
    data_dir: DataDir = None,
) -> None:
    """Revert migrations down to REVISION."""
    from konan.db import migrate

    engine = _engine(data_dir)
    migrate.downgrade(engine, revision)
    console.print(f"database at {migrate.current_revision(engine) or 'base'}")
    engine.dispose()


@db_app.command("current")
def db_current(data_dir: DataDir = None) -> None:
    """Show the database's revision and the code's head."""
    from konan.db import migrate

    engine = _engine(data_dir)
    current, head = migrate.current_revision(engine), migrate.head_revision(engine)
    engine.dispose()
    console.print(f"database: {current or 'empty'}\ncode head: {head}")
    if current != head:
        fail("the database is not at the code's head; run `konan admin db upgrade`", code=1)


@audit_app.command("verify")
def audit_verify(data_dir: DataDir = None) -> None:
    """Check the audit log's hash chain; names the first event that was altered or removed."""
    from konan.db.engine import make_session_factory
    from konan.governance import audit

    engine = _engine(data_dir)
    with make_session_factory(engine)() as session:
        report = audit.verify(session)
    engine.dispose()
    if report.ok:
        console.print(f"[green]audit log intact[/]: {report.checked} events verified")
        return
    fail(
        f"audit log broken at event {report.first_bad_id}: {report.reason} "
        f"({report.checked} events before it verified)",
        code=1,
    )
