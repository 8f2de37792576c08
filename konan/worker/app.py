"""Worker composition root: the Celery app with every domain's tasks and the periodic schedule."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import task_success, worker_ready, worker_shutdown

from konan.backends.queue.celery_app import make_celery
from konan.backends.queue.context import TaskContext, set_task_context
from konan.core.settings import Settings
from konan.db import heartbeats
from konan.db.engine import make_engine, make_session_factory, unit_of_work
from konan.monitoring import metrics
from konan.monitoring.metrics import serve_metrics

log = logging.getLogger("konan.worker")

HEARTBEAT_SECONDS = 5.0
EVALUATE_ALERTS_EVERY_SECONDS = 60.0
EVALUATE_ALERTS_TASK = "konan.monitoring.evaluate_alerts"


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "expire-approvals": {
            "task": "konan.governance.expire_approvals",
            "schedule": settings.queue.expire_approvals_every_seconds,
        },
        "reconcile-deployments": {
            "task": "konan.deployments.reconcile_all",
            "schedule": settings.queue.reconcile_every_seconds,
        },
        "purge-prediction-logs": {
            "task": "konan.monitoring.purge_prediction_logs",
            "schedule": crontab(hour="3", minute="17"),
        },
        "evaluate-alerts": {
            "task": EVALUATE_ALERTS_TASK,
            "schedule": EVALUATE_ALERTS_EVERY_SECONDS,
        },
    }


def create_worker_app(settings: Settings) -> Celery:
    app = make_celery(settings, include_tasks=True)
    app.conf.beat_schedule = beat_schedule(settings)
    return app


class _Heartbeat:
    """Tells /readyz this worker is alive: one upsert every few seconds, removed on clean stop."""

    def __init__(self, context: TaskContext) -> None:
        self.context = context
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="konan-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with unit_of_work(self.context.session_factory) as session:
                    heartbeats.beat(session, "worker")
            except Exception as exc:  # the database may be restarting; try again next beat
                log.warning("worker heartbeat failed: %s", type(exc).__name__)
            self.stop.wait(HEARTBEAT_SECONDS)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        try:
            with unit_of_work(self.context.session_factory) as session:
                heartbeats.forget(session, "worker")
        except Exception:
            log.warning("could not remove the worker heartbeat")


def _on_task_success(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) == EVALUATE_ALERTS_TASK:
        metrics.ALERTS_EVALUATED.set_to_current_time()


def run_worker(settings: Settings, *, beat: bool, concurrency: int | None, loglevel: str) -> None:
    """`konan worker`. Raises ConfigError (before anything starts) when the metrics port that
    KONAN_QUEUE__WORKER_METRICS_PORT names cannot be served."""
    close_metrics = None
    if settings.queue.worker_metrics_port is not None:
        # Tasks run on the thread pool of this process (below), so values they set are on the
        # default registry this server reads.
        close_metrics = serve_metrics(
            settings.queue.worker_metrics_host,
            settings.queue.worker_metrics_port,
            port_setting="KONAN_QUEUE__WORKER_METRICS_PORT",
            host_setting="KONAN_QUEUE__WORKER_METRICS_HOST",
        )
    try:
        _run(settings, beat=beat, concurrency=concurrency, loglevel=loglevel)
    finally:
        if close_metrics is not None:
            close_metrics()


def _run(settings: Settings, *, beat: bool, concurrency: int | None, loglevel: str) -> None:
    engine = make_engine(settings.database_url, settings)
    context = TaskContext(settings, make_session_factory(engine))
    set_task_context(context)
    heartbeat = _Heartbeat(context)

    def _on_ready(**_: Any) -> None:
        heartbeat.thread.start()

    def _on_shutdown(**_: Any) -> None:
        heartbeat.close()

    worker_ready.connect(_on_ready, weak=False)
    worker_shutdown.connect(_on_shutdown, weak=False)
    task_success.connect(_on_task_success, weak=False)

    app = create_worker_app(settings)
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        # Threads: tasks orchestrate I/O (database, stores, runtimes); CPU-heavy work such as
        # model validation and training runs in child processes the task starts itself.
        # The metrics server above relies on this pool: with prefork, task code would set
        # metrics in children it cannot see.
        "--pool=threads",
        f"--concurrency={concurrency or settings.queue.worker_concurrency}",
        f"--queues={settings.queue.name}",
        "--without-gossip",
        "--without-mingle",
    ]
    if beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={settings.data_dir.resolve() / 'celerybeat-schedule'}"]
    app.worker_main(argv)
