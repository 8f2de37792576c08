"""The control plane's /metrics: the process registry plus the background processes' heartbeats.

A dead worker or monitor exports nothing, so its own /metrics cannot say it is dead. The control
plane reads the heartbeats table (konan/db/heartbeats.py) at each scrape instead and reports, per
background process, the age of the newest heartbeat of any instance (+Inf when no instance has
one: none ever started, or every one stopped cleanly and removed its row) and how many instances
reported within the /readyz window. The alert `KonanBackgroundProcessDown` reads the age.

The label is `process`, not `component`: the scrape configs set a `component` target label,
which would rename a sample's own `component` to `exported_component`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from fastapi import Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from konan.core.types import utcnow
from konan.db.heartbeats import Heartbeat
from konan.server.deps import StateDep
from konan.server.docs import metrics_access
from konan.server.health import HEARTBEAT_WINDOW

log = logging.getLogger("konan.server")

# The background roles /readyz waits for; each one always gets a sample, so a role that never
# reported shows +Inf instead of no series (an alert cannot fire on a missing series).
COMPONENTS = ("worker", "monitor")


def heartbeat_families(session: Session, now: datetime | None = None) -> list[GaugeMetricFamily]:
    now = now or utcnow()
    cutoff = now - HEARTBEAT_WINDOW
    rows = session.execute(
        sa.select(
            Heartbeat.component,
            sa.func.max(Heartbeat.seen_at),
            sa.func.sum(sa.case((Heartbeat.seen_at >= cutoff, 1), else_=0)),
        ).group_by(Heartbeat.component)
    ).all()
    newest: dict[str, datetime] = {}
    alive: dict[str, int] = {}
    for component, seen_at, count in rows:
        newest[component] = seen_at
        alive[component] = int(count or 0)
    age = GaugeMetricFamily(
        "konan_heartbeat_age_seconds",
        "Seconds since the newest heartbeat of any instance of a background process (+Inf: none "
        "recorded), read from the database by the control plane at each scrape.",
        labels=["process"],
    )
    instances = GaugeMetricFamily(
        "konan_heartbeat_instances",
        f"Instances of a background process that reported within "
        f"{int(HEARTBEAT_WINDOW.total_seconds())} s (the /readyz window).",
        labels=["process"],
    )
    for component in sorted(set(COMPONENTS) | set(newest)):
        seen = newest.get(component)
        age.add_metric(
            [component], max(0.0, (now - seen).total_seconds()) if seen is not None else math.inf
        )
        instances.add_metric([component], alive.get(component, 0))
    return [age, instances]


class _Families(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self.families


def install_metrics(app: FastAPI) -> None:
    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_access)])
    def metrics(state: StateDep) -> Response:
        registry: CollectorRegistry = REGISTRY
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # several uvicorn workers
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
        try:
            # Its own short session (as /readyz does): a failed read must not fail the request's.
            with state.session_factory() as session:
                families = heartbeat_families(session)
        except sa.exc.SQLAlchemyError as exc:
            # The scrape still answers (KonanApiDown is about the API); the heartbeat series go
            # missing while the database does not answer.
            log.warning("heartbeats not readable for /metrics: %s", type(exc).__name__)
        else:
            extra = CollectorRegistry(auto_describe=False)
            extra.register(_Families(families))
            body += generate_latest(extra)
        return Response(content=body, media_type=CONTENT_TYPE_LATEST)
