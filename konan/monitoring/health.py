"""Health of a deployment over time, from the per-minute rollups (`HealthMinute`).

Latency percentiles come from the fixed histogram buckets, interpolated linearly inside the
bucket that holds the rank (as Prometheus' ``histogram_quantile`` does), so a percentile is off
by at most the width of its bucket; above the last finite bound it is reported as that bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from konan.core.errors import InvalidInput
from konan.deployments.orm import Deployment
from konan.monitoring.orm import LATENCY_BOUNDS_MS, LATENCY_COLUMNS, HealthMinute
from konan.registry.orm import ModelVersion

BUCKETS: dict[str, int] = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
DEFAULT_SPAN = timedelta(hours=24)
MAX_BUCKETS = 10_000  # per version; 1m buckets cover about a week
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def start_epoch(self) -> int:
        return int(self.start.timestamp())

    @property
    def end_epoch(self) -> int:
        return int(self.end.timestamp())


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def resolve_window(
    start: datetime | None,
    end: datetime | None,
    *,
    now: datetime | None = None,
    default_span: timedelta = DEFAULT_SPAN,
    max_span: timedelta,
) -> Window:
    """``[start, end)`` in UTC (naive times are UTC); defaults: the last ``default_span``."""
    end = _utc(end) if end is not None else _utc(now or datetime.now(UTC))
    start = _utc(start) if start is not None else end - default_span
    if start >= end:
        raise InvalidInput(f"start ({start.isoformat()}) must be before end ({end.isoformat()})")
    if end - start > max_span:
        raise InvalidInput(
            f"the window from {start.isoformat()} to {end.isoformat()} is longer than "
            f"{_span(max_span)}; narrow it or use a coarser bucket"
        )
    return Window(start, end)


def _span(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} hours"


def bucket_seconds(bucket: str) -> int:
    try:
        return BUCKETS[bucket]
    except KeyError:
        raise InvalidInput(f"unknown bucket {bucket!r}; use one of {', '.join(BUCKETS)}") from None


def histogram_quantile(q: float, counts: list[int]) -> float | None:
    """The ``q`` quantile (0..1) of latencies given per-bucket counts over LATENCY_COLUMNS."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, n in enumerate(counts):
        if n and cumulative + n >= rank:
            if i >= len(LATENCY_BOUNDS_MS):
                return LATENCY_BOUNDS_MS[-1]
            low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            high = LATENCY_BOUNDS_MS[i]
            return low + (high - low) * (rank - cumulative) / n
        cumulative += n
    return LATENCY_BOUNDS_MS[-1]


def health_report(
    session: Session,
    deployment: Deployment,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bucket: str = "1h",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Per bucket and model version: requests, errors by class, error rate, latency."""
    width = bucket_seconds(bucket)
    window = resolve_window(start, end, now=now, max_span=timedelta(seconds=width * MAX_BUCKETS))
    first = window.start_epoch // width * width
    h = HealthMinute
    slot = (h.bucket_start // width) * width
    sums = [
        sa.func.sum(getattr(h, name))
        for name in ("requests", "status_2xx", "status_4xx", "status_5xx", "latency_sum_ms")
    ]
    sums += [sa.func.sum(getattr(h, name)) for name in LATENCY_COLUMNS]
    rows = session.execute(
        sa.select(slot.label("slot"), h.model_version_id, *sums)
        .where(
            h.deployment_id == deployment.id,
            h.bucket_start >= first,
            h.bucket_start < window.end_epoch,
        )
        .group_by(slot, h.model_version_id)
        .order_by(slot, h.model_version_id)
    ).all()
    version_ids = {row[1] for row in rows} - {0}
    numbers: dict[int, int] = {}
    if version_ids:
        query = sa.select(ModelVersion.id, ModelVersion.version).where(
            ModelVersion.id.in_(version_ids)
        )
        numbers = {version_id: number for version_id, number in session.execute(query)}
    buckets = []
    for row in rows:
        slot_start, version_id = int(row[0]), int(row[1])
        requests, s2, s4, s5 = (int(v or 0) for v in row[2:6])
        latency_sum = float(row[6] or 0.0)
        counts = [int(v or 0) for v in row[7:]]
        errors = s4 + s5
        buckets.append(
            {
                "start": datetime.fromtimestamp(slot_start, UTC).isoformat(),
                "model_version": numbers.get(version_id),
                "requests": requests,
                "errors": errors,
                "errors_by_class": {"4xx": s4, "5xx": s5},
                "status": {"2xx": s2, "4xx": s4, "5xx": s5, "other": requests - s2 - s4 - s5},
                "rejected": s4,
                "error_rate": errors / requests if requests else 0.0,
                "latency_ms": {
                    "mean": latency_sum / requests if requests else None,
                    **{name: histogram_quantile(q, counts) for name, q in QUANTILES},
                },
            }
        )
    return {
        "deployment": deployment.name,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "bucket": bucket,
        "latency_bounds_ms": list(LATENCY_BOUNDS_MS),
        "buckets": buckets,
    }
