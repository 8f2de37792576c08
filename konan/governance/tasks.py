"""Periodic governance work, run by the worker."""

from __future__ import annotations

from celery import shared_task
from sqlalchemy.exc import OperationalError

from konan.backends.queue.context import task_context
from konan.db.engine import unit_of_work
from konan.governance import service


@shared_task(
    name="konan.governance.expire_approvals",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def expire_approvals() -> int:
    """Mark pending approval requests past their deadline as expired. Safe to run twice."""
    with unit_of_work(task_context().session_factory) as session:
        return service.expire_approvals(session)
