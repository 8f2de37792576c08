"""`konan up`: the whole platform on one machine with the embedded default.

Runs migrations, creates the first admin, then starts and supervises three processes — the
control plane, a worker (with the periodic scheduler) and the monitoring consumer. Ctrl-C or
SIGTERM stops all of them; if one dies, the others are stopped too and the exit code says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from konan.cli.common import console, err_console, settings_from
from konan.core.settings import Settings

STOP_GRACE_SECONDS = 15.0
# Generous: on a small or busy machine four Python processes importing FastAPI, SQLAlchemy
# and Celery at once can take well over 20 s; a crash is noticed at once regardless.
HEALTH_DEADLINE_SECONDS = 120.0


def _prepare(settings: Settings) -> str | None:
    """Migrate and bootstrap; returns the generated admin password, if one was generated."""
    from konan.db import migrate
    from konan.db.engine import make_engine, make_session_factory, unit_of_work
    from konan.governance import service

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    engine = make_engine(settings.database_url, settings)
    try:
        migrate.upgrade(engine)
        admin_password = (
            settings.admin_password.get_secret_value() if settings.admin_password else None
        )
        with unit_of_work(make_session_factory(engine)) as session:
            result = service.bootstrap(session, admin_password)
    finally:
        engine.dispose()
    settings.jwt_secret()  # create it now, before three processes race to
    return result.generated_password


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "konan", *args], env=env)


def _wait_healthy(url: str, procs: dict[str, subprocess.Popen[bytes]]) -> bool:
    import httpx2

    deadline = time.monotonic() + HEALTH_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs.values()):
            return False
        try:
            if httpx2.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx2.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in procs.values():
        remaining = max(0.1, deadline - time.monotonic())
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Stop(Exception):
    pass


def up(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="KONAN_DATA_DIR", help="where all state lives")
    ] = Path(".konan"),
) -> None:
    """Start Konan on this machine: API + dashboard, a worker and the monitoring consumer."""
    # The server's address goes into the children's settings: model servers reach it for keys.
    settings = settings_from(data_dir, server={"host": host, "port": port})
    with console.status("Preparing the database…"):
        generated = _prepare(settings)
    if generated:
        console.print(
            Panel(
                f"user [bold]admin[/], password [bold]{generated}[/]\n"
                "Shown only this once; set KONAN_ADMIN_PASSWORD to choose it yourself.",
                title="First start: admin account created",
                border_style="yellow",
            )
        )

    env = {**os.environ, **settings.child_env()}
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def _on_term(signum: int, _frame: object) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, _on_term)
    url = f"http://{host}:{port}"
    exit_code = 0
    try:
        procs["server"] = _spawn(["server", "--host", host, "--port", str(port)], env)
        procs["worker"] = _spawn(["worker", "--beat"], env)
        procs["monitor"] = _spawn(["monitor"], env)
        if settings.runtime.kind == "local":
            procs["agent"] = _spawn(["agent"], env)
        if not _wait_healthy(url, procs):
            dead = [
                f"{n} (exit code {p.returncode})" for n, p in procs.items() if p.poll() is not None
            ]
            why = f": {', '.join(dead)} stopped" if dead else f" in {HEALTH_DEADLINE_SECONDS:g} s"
            err_console.print(f"[bold red]error:[/] the server did not answer {url}/healthz{why}")
            exit_code = 1
            return
        console.print(
            f"[bold green]Konan is running[/] — dashboard and API at [link={url}]{url}[/]"
        )
        console.print(f"Data in {settings.data_dir.resolve()}. Press Ctrl-C to stop.")
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    err_console.print(f"[bold red]error:[/] the {name} exited ({proc.returncode})")
                    exit_code = 1
                    return
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        console.print("Stopping…")
    finally:
        _stop_all(procs)
        signal.signal(signal.SIGTERM, previous)
        if exit_code:
            raise typer.Exit(exit_code)
