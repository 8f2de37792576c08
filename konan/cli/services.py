"""`konan server`, `konan worker`, `konan monitor`: one role each, for scale-out or supervision."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from konan.cli.common import fail, settings_from
from konan.core.errors import ConfigError

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="KONAN_DATA_DIR", help="where embedded state lives"),
]


def server(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Run the control plane (REST API, dashboard, /metrics)."""
    import uvicorn

    from konan.db import migrate
    from konan.db.engine import make_engine

    settings = settings_from(data_dir)
    engine = make_engine(settings.database_url, settings)
    try:
        migrate.ensure_current(engine)  # fail here, before uvicorn, with the command to run
    except ConfigError as exc:
        fail(exc.detail)
    finally:
        engine.dispose()
    uvicorn.run(
        "konan.server.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
        access_log=False,
    )


def worker(
    beat: Annotated[
        bool, typer.Option(help="also run the periodic scheduler (one per site)")
    ] = False,
    concurrency: Annotated[int | None, typer.Option(help="task threads")] = None,
    loglevel: Annotated[str, typer.Option(help="log level")] = "INFO",
    data_dir: DataDir = None,
) -> None:
    """Run a Celery worker: deployments, builds, retraining and periodic work."""
    from konan.worker.app import run_worker

    settings = settings_from(data_dir)
    try:
        run_worker(settings, beat=beat, concurrency=concurrency, loglevel=loglevel)
    except ConfigError as exc:
        fail(exc.detail)


def monitor(data_dir: DataDir = None) -> None:
    """Run the monitoring consumer: prediction logs → database, rollups, alerts."""
    from konan.monitoring import ingest
    from konan.monitoring.consumer import CORRUPT, run_monitor
    from konan.monitoring.metrics import DEAD_LETTERED, serve_metrics

    settings = settings_from(data_dir)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # Every reason starts at 0: a series born at 1 shows Prometheus no increase, and the first
    # dead letter of each reason would not fire KonanLogRecordsDeadLettered.
    for reason in (
        CORRUPT,
        ingest.INVALID,
        ingest.UNKNOWN_DEPLOYMENT,
        ingest.UNKNOWN_MODEL_VERSION,
        ingest.DATABASE_REJECTED,
    ):
        DEAD_LETTERED.labels(reason=reason)
    close_metrics = None
    if settings.monitoring.metrics_port is not None:
        try:
            close_metrics = serve_metrics(
                settings.monitoring.metrics_host,
                settings.monitoring.metrics_port,
                port_setting="KONAN_MONITORING__METRICS_PORT",
                host_setting="KONAN_MONITORING__METRICS_HOST",
            )
        except ConfigError as exc:
            fail(exc.detail)
    try:
        run_monitor(settings, stop)
    finally:
        if close_metrics is not None:
            close_metrics()


def agent(data_dir: DataDir = None) -> None:
    """Run the local-process runtime's supervisor (model servers of runtime=local)."""
    from konan.backends.runtimes.agent import run_agent

    settings = settings_from(data_dir)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_agent(settings, stop)
