"""Deployment lifecycle tasks: converge one deployment after a change, and all of them
periodically (heals crashed workloads, refreshes status). Both are idempotent."""

from __future__ import annotations

import time

from celery import shared_task
from sqlalchemy.exc import OperationalError

from konan.backends.queue.context import task_context
from konan.backends.runtimes.base import Runtime
from konan.core.settings import Settings
from konan.deployments import reconciler

_runtimes: dict[int, Runtime] = {}


def _runtime(settings: Settings) -> Runtime:
    """One runtime per worker process (the settings object lives as long as the process)."""
    runtime = _runtimes.get(id(settings))
    if runtime is None:
        from konan.backends.runtimes.factory import runtime_from_settings

        runtime = _runtimes[id(settings)] = runtime_from_settings(settings)
    return runtime


@shared_task(
    name="konan.deployments.reconcile",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=8,
)
def reconcile(deployment_id: int) -> str | None:
    ctx = task_context()
    result = reconciler.reconcile(
        ctx.session_factory, _runtime(ctx.settings), ctx.settings, deployment_id
    )
    if result is not None and result.status in SETTLING:
        refresh_status.apply_async(args=[deployment_id, time.time() + WATCH_SECONDS], countdown=1)
    return result.status if result else None


# While a deployment is starting, watch it closely so "ready" shows within a second or so
# instead of at the next periodic pass.
SETTLING = frozenset({"pending", "starting", "degraded"})
WATCH_SECONDS = 120.0


@shared_task(name="konan.deployments.refresh_status", ignore_result=True)
def refresh_status(deployment_id: int, until: float) -> str | None:
    ctx = task_context()
    result = reconciler.reconcile(
        ctx.session_factory, _runtime(ctx.settings), ctx.settings, deployment_id, apply=False
    )
    if result is not None and result.status in SETTLING and time.time() < until:
        refresh_status.apply_async(args=[deployment_id, until], countdown=1)
    return result.status if result else None


@shared_task(name="konan.deployments.reconcile_all", ignore_result=True)
def reconcile_all() -> int:
    ctx = task_context()
    return len(reconciler.reconcile_all(ctx.session_factory, _runtime(ctx.settings), ctx.settings))
