"""The Celery app, built from settings. Same task code on both brokers:

* embedded: kombu's SQLAlchemy transport on a SQLite file in data_dir (no server to run);
* scale-out: Redis.

Reliability settings hold in both modes: JSON only, late acks with reject-on-worker-lost
(a task whose worker dies is redelivered), one prefetched task per worker process, and a
visibility timeout longer than the longest task.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from konan.core.settings import Settings

# Every domain's task module; the worker imports these, the server only sends by name.
TASK_MODULES = [
    "konan.deployments.tasks",
    "konan.governance.tasks",
    "konan.monitoring.tasks",
]


def make_celery(settings: Settings, *, include_tasks: bool = False) -> Celery:
    app = Celery("konan", set_as_current=False)
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.queue.name,
        "task_track_started": True,
        "result_expires": 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # On the SQLAlchemy transport every transport option goes to create_engine(), so only
        # Redis gets them.
        conf["broker_transport_options"] = {"visibility_timeout": settings.queue.visibility_timeout}
        conf["result_backend_transport_options"] = {
            "visibility_timeout": settings.queue.visibility_timeout
        }
    app.conf.update(conf)
    if include_tasks:
        app.conf.include = TASK_MODULES
    return app


def broker_reachable(settings: Settings, timeout: float = 2.0) -> tuple[bool, str]:
    from kombu.connection import Connection

    url = settings.broker_url
    kind = url.split("://", 1)[0]
    try:
        with Connection(url, connect_timeout=timeout) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        return False, f"{kind} broker unreachable ({type(exc).__name__})"
    return True, f"{kind} broker"
