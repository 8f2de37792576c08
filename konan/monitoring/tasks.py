"""Periodic monitoring work, run by the worker."""

from __future__ import annotations

from celery import shared_task
from sqlalchemy.exc import OperationalError

from konan.backends.queue.context import task_context
from konan.db.engine import unit_of_work
from konan.monitoring import alerts, retention


@shared_task(
    name="konan.monitoring.purge_prediction_logs",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def purge_prediction_logs(retention_days: int | None = None) -> int:
    """Delete raw prediction logs older than the retention window, in batches. Idempotent."""
    ctx = task_context()
    days = retention_days or ctx.settings.monitoring.raw_retention_days
    total = 0
    while True:
        # One short transaction per batch: never one huge DELETE holding locks.
        with unit_of_work(ctx.session_factory) as session:
            deleted = retention.purge_raw_logs(session, older_than_days=days)
        total += deleted
        if deleted < retention.PURGE_BATCH:
            return total


@shared_task(
    name="konan.monitoring.evaluate_alerts", autoretry_for=(OperationalError,), max_retries=2
)
def evaluate_alerts() -> int:
    """Evaluate every enabled alert rule once; webhooks go out after the commit.

    Returns the number of state changes (alerts opened or resolved)."""
    ctx = task_context()
    transitions = alerts.evaluate_and_notify(ctx.session_factory, ctx.settings.jwt_secret())
    return len(transitions)
