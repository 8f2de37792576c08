"""Health from the per-minute rollups: counts by status class and latency percentiles from
histogram buckets, on SQLite and PostgreSQL."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from konan.core.errors import InvalidInput
from konan.db.engine import unit_of_work
from konan.deployments.orm import Deployment
from konan.monitoring.health import health_report, histogram_quantile
from konan.monitoring.ingest import ingest
from konan.monitoring.orm import LATENCY_BOUNDS_MS
from tests.factories import seed_deployment

from .test_rollups import T0


def _bucket_width(value: float) -> float:
    i = bisect.bisect_left(LATENCY_BOUNDS_MS, value)
    low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
    high = LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)]
    return high - low


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    counts = [0] * 14
    counts[3] = 10  # (5, 10] ms
    assert histogram_quantile(0.5, counts) == pytest.approx(7.5)
    assert histogram_quantile(1.0, counts) == pytest.approx(10.0)
    assert histogram_quantile(0.5, [0] * 14) is None
    counts = [0] * 13 + [4]  # all above the last bound
    assert histogram_quantile(0.99, counts) == LATENCY_BOUNDS_MS[-1]


def _records(deployment_id: int, version_id: int, latencies: Any, statuses: Any) -> list[Any]:
    return [
        {
            "request_id": f"h-{i}",
            "deployment_id": deployment_id,
            "model_version_id": version_id,
            "role": "champion",
            "at": T0 + i * (7200 / len(latencies)),  # two hours
            "inputs": [],
            "outputs": {},
            "latency_ms": float(latency),
            "status_code": int(status),
            "error": None,
        }
        for i, (latency, status) in enumerate(zip(latencies, statuses, strict=True))
    ]


def test_health_percentiles_are_within_one_bucket_of_numpy(
    session_factory: sessionmaker[Session],
) -> None:
    rng = np.random.default_rng(5)
    latencies = rng.lognormal(3.5, 0.8, 3000)  # median ~33 ms
    statuses = rng.choice([200, 201, 404, 422, 500, 503, 302], 3000)
    with unit_of_work(session_factory) as session:
        seeded = seed_deployment(session)
        assert not ingest(
            session, _records(seeded.deployment.id, seeded.version.id, latencies, statuses)
        ).rejected
    with session_factory() as session:
        deployment = session.get(Deployment, seeded.deployment.id)
        assert deployment is not None
        report = health_report(
            session,
            deployment,
            start=datetime.fromtimestamp(T0, UTC),
            end=datetime.fromtimestamp(T0 + 7200, UTC),
            bucket="1d",
        )
        hourly = health_report(
            session,
            deployment,
            start=datetime.fromtimestamp(T0, UTC),
            end=datetime.fromtimestamp(T0 + 7200, UTC),
            bucket="1h",
        )
    (day,) = report["buckets"]
    assert day["model_version"] == 1
    assert day["requests"] == 3000
    four, five = int(np.isin(statuses, [404, 422]).sum()), int(np.isin(statuses, [500, 503]).sum())
    assert day["errors_by_class"] == {"4xx": four, "5xx": five}
    assert day["rejected"] == four
    assert day["status"]["2xx"] == int(np.isin(statuses, [200, 201]).sum())
    assert day["status"]["other"] == int((statuses == 302).sum())
    assert day["error_rate"] == pytest.approx((four + five) / 3000)
    assert day["latency_ms"]["mean"] == pytest.approx(latencies.mean())
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        true = float(np.percentile(latencies, q))
        assert abs(day["latency_ms"][name] - true) <= _bucket_width(true), name
    assert [b["requests"] for b in hourly["buckets"]] == [1500, 1500]
    assert hourly["buckets"][1]["start"] == datetime.fromtimestamp(T0 + 3600, UTC).isoformat()


def test_health_refuses_bad_windows(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        deployment = seed_deployment(session).deployment
        now = datetime(2026, 11, 30, tzinfo=UTC)
        with pytest.raises(InvalidInput, match="must be before"):
            health_report(session, deployment, start=now, end=now - timedelta(hours=1))
        with pytest.raises(InvalidInput, match="unknown bucket"):
            health_report(session, deployment, bucket="2h")
        with pytest.raises(InvalidInput, match="longer than"):
            health_report(session, deployment, start=now - timedelta(days=30), end=now, bucket="1m")
        empty = health_report(session, deployment, now=now)
    assert empty["buckets"] == []
    assert empty["start"] == (now - timedelta(hours=24)).isoformat()
