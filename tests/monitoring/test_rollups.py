"""Rollups kept at ingest equal a direct computation over the stored raw rows, on SQLite and
PostgreSQL, and replays never add to them."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import Counter
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from konan.db.engine import unit_of_work
from konan.monitoring.ingest import ingest
from konan.monitoring.orm import (
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    FeatureHistogram,
    HealthMinute,
    PredictionLog,
)
from konan.monitoring.rollups import (
    BIN_CACHE,
    MISSING_BIN,
    PREDICTION,
    VersionBins,
    histogram_counts,
)
from konan.registry.binning import categorical_bins, numeric_bins
from konan.registry.orm import Dataset, DatasetVersion, ModelVersion
from tests.factories import Seeded, seed_deployment

T0 = 1_700_000_000 // 3600 * 3600  # an hour boundary
PLANS = ["basic", "pro", "enterprise"]
PLAN_P = [0.5, 0.3, 0.2]


def reference_frame(rng: np.random.Generator, n: int) -> dict[str, list[Any]]:
    return {
        "tenure": rng.normal(10.0, 2.0, n).tolist(),
        "spend": rng.exponential(50.0, n).tolist(),
        "plan": rng.choice(PLANS, n, p=PLAN_P).tolist(),
        "active": rng.choice([True, False], n, p=[0.7, 0.3]).tolist(),
        PREDICTION: rng.choice([0, 1], n, p=[0.6, 0.4]).tolist(),
    }


def attach_reference(session: Session, seeded: Seeded, frame: dict[str, list[Any]]) -> None:
    """Give the seeded model version a reference dataset profiled from ``frame``."""
    bins: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for name, values in frame.items():
        if isinstance(values[0], float):
            array = np.asarray(values, dtype=np.float64)
            bins[name] = numeric_bins(array).to_json()
            stats[name] = {
                "count": int(array.size),
                "min": float(array.min()),
                "max": float(array.max()),
                "std": float(array.std(ddof=1)),
            }
        else:
            bins[name] = categorical_bins(values).to_json()
            stats[name] = {"count": len(values)}
    dataset = Dataset(project_id=seeded.project.id, name=f"ref-{uuid.uuid4().hex[:8]}")
    session.add(dataset)
    session.flush()
    version = DatasetVersion(
        dataset_id=dataset.id,
        version=1,
        sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        format="csv",
        size=1,
        row_count=len(next(iter(frame.values()))),
        stats=stats,
        reference_bins=bins,
    )
    session.add(version)
    session.flush()
    model_version = session.get(ModelVersion, seeded.version.id)
    assert model_version is not None
    model_version.reference_dataset_version_id = version.id
    model_version.signature = {
        "inputs": [{"name": n} for n in frame if n != PREDICTION],
        "outputs": {"kind": "label"},
    }
    session.flush()


def records_from(
    frame: dict[str, list[Any]],
    deployment_id: int,
    version_id: int,
    *,
    rng: np.random.Generator,
    start: float = T0,
    span: float = 3 * 3600,
    prefix: str = "r",
) -> list[dict[str, Any]]:
    """Split the rows of ``frame`` into records of 1 to 5 rows each, spread over ``span``."""
    n = len(next(iter(frame.values())))
    records: list[dict[str, Any]] = []
    i = 0
    while i < n:
        size = int(rng.integers(1, 6))
        rows = [
            {k: v[j] for k, v in frame.items() if k != PREDICTION}
            for j in range(i, min(n, i + size))
        ]
        predictions = frame[PREDICTION][i : i + len(rows)]
        status = int(rng.choice([200, 200, 200, 200, 422, 500]))
        records.append(
            {
                "request_id": f"{prefix}-{i}",
                "deployment_id": deployment_id,
                "model_version_id": version_id,
                "role": "champion",
                "at": start + float(rng.uniform(0, span)),
                "inputs": rows,
                "outputs": {"predictions": predictions},
                "latency_ms": float(rng.lognormal(3.0, 1.0)),
                "status_code": status,
                "error": None,
            }
        )
        i += len(rows)
    return records


# ---- an independent computation over the raw rows ------------------------------------------


def expected_health(session: Session) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in session.scalars(sa.select(PredictionLog)):
        key = (row.deployment_id, row.model_version_id or 0, row.role, row.bucket_start)
        acc = out.setdefault(
            key,
            {"requests": 0, "status_2xx": 0, "status_4xx": 0, "status_5xx": 0, "lat": []},
        )
        acc["requests"] += 1
        klass = row.status_code // 100
        if klass in (2, 4, 5):
            acc[f"status_{klass}xx"] += 1
        acc["lat"].append(row.latency_ms)
    for acc in out.values():
        latencies = acc.pop("lat")
        acc["latency_sum_ms"] = pytest_approx(sum(latencies))
        for i, name in enumerate(LATENCY_COLUMNS):
            low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else -math.inf
            high = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else math.inf
            acc[name] = sum(1 for x in latencies if low < x <= high)
    return out


def pytest_approx(value: float) -> Any:
    import pytest

    return pytest.approx(value, rel=1e-9)


def stored_health(session: Session) -> dict[tuple[Any, ...], dict[str, Any]]:
    out = {}
    for row in session.scalars(sa.select(HealthMinute)):
        key = (row.deployment_id, row.model_version_id, row.role, row.bucket_start)
        values = {
            n: getattr(row, n)
            for n in ("requests", "status_2xx", "status_4xx", "status_5xx", "latency_sum_ms")
        }
        values.update({n: getattr(row, n) for n in LATENCY_COLUMNS})
        out[key] = values
    return out


def expected_histograms(session: Session) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    versions = {v.id: v for v in session.scalars(sa.select(ModelVersion))}
    for row in session.scalars(sa.select(PredictionLog)):
        version = versions[row.model_version_id] if row.model_version_id else None
        if version is None or version.reference_dataset_version_id is None:
            continue
        reference = session.get(DatasetVersion, version.reference_dataset_version_id)
        assert reference is not None
        hour = row.bucket_start // 3600 * 3600
        columns: dict[str, list[Any]] = {}
        for item in row.inputs or []:
            for name in reference.reference_bins:
                if name != PREDICTION:
                    columns.setdefault(name, []).append(item.get(name))
        columns.setdefault(PREDICTION, []).extend((row.outputs or {}).get("predictions", []))
        for name, values in columns.items():
            spec = reference.reference_bins[name]
            for value in values:
                out[(row.deployment_id, version.id, hour, name, _bin(spec, value))] += 1
    return out


def _bin(spec: dict[str, Any], value: Any) -> int:
    if spec["kind"] == "numeric":
        if not isinstance(value, int | float) or not math.isfinite(float(value)):
            return MISSING_BIN
        return sum(1 for edge in spec["edges"] if edge < float(value))  # right-closed
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING_BIN
    categories = spec["categories"]
    for i, category in enumerate(categories):
        if value == category and type(value) is type(category):
            return i
    return len(categories) + (0 if spec["other"] else 1)


def stored_histograms(session: Session) -> Counter[tuple[Any, ...]]:
    return Counter(
        {
            (r.deployment_id, r.model_version_id, r.bucket_start, r.feature, r.bin): r.count
            for r in session.scalars(sa.select(FeatureHistogram))
        }
    )


def seeded_with_reference(
    session_factory: sessionmaker[Session], n_reference: int = 500, seed: int = 1
) -> Seeded:
    BIN_CACHE.clear()
    with unit_of_work(session_factory) as session:
        seeded = seed_deployment(session)
        attach_reference(session, seeded, reference_frame(np.random.default_rng(seed), n_reference))
        session.expunge_all()
    return seeded


def messy_frame(rng: np.random.Generator, n: int) -> dict[str, list[Any]]:
    frame = reference_frame(rng, n)
    # Missing values, wrong types and a category the reference never had.
    frame["tenure"][0] = None
    frame["tenure"][1] = [1.0]  # JSON has no NaN or inf: a log holds null or a wrong type
    frame["tenure"][2] = "ten"
    frame["spend"][3] = True
    frame["plan"][4] = "trial"
    frame["plan"][5] = None
    frame["active"][6] = None
    # A value exactly on an edge belongs to the bin below it.
    return frame


# ---- tests ------------------------------------------------------------------------------------


def test_rollups_equal_a_direct_computation_over_the_raw_rows(
    session_factory: sessionmaker[Session],
) -> None:
    seeded = seeded_with_reference(session_factory)
    rng = np.random.default_rng(7)
    frame = messy_frame(rng, 600)
    with session_factory() as session:
        edges = session.scalars(sa.select(DatasetVersion.reference_bins)).one()["tenure"]["edges"]
    frame["tenure"][7] = edges[3]
    records = records_from(frame, seeded.deployment.id, seeded.version.id, rng=rng)
    with unit_of_work(session_factory) as session:
        for start in range(0, len(records), 40):  # several batches, like the consumer
            result = ingest(session, records[start : start + 40])
            assert not result.rejected

    with session_factory() as session:
        assert stored_health(session) == expected_health(session)
        histograms = stored_histograms(session)
        assert histograms == expected_histograms(session)
    assert sum(n for k, n in histograms.items() if k[3] == "tenure") == 600
    assert histograms[(seeded.deployment.id, seeded.version.id, T0, "plan", 3)] == 0  # no other
    unseen = sum(n for k, n in histograms.items() if k[3] == "plan" and k[4] == 4)
    assert unseen == 1
    assert sum(n for k, n in histograms.items() if k[3] == "tenure" and k[4] == MISSING_BIN) == 3


def test_ingesting_the_same_records_twice_does_not_double_the_rollups(
    session_factory: sessionmaker[Session],
) -> None:
    seeded = seeded_with_reference(session_factory)
    rng = np.random.default_rng(8)
    records = records_from(
        reference_frame(rng, 300), seeded.deployment.id, seeded.version.id, rng=rng
    )
    half = len(records) // 2
    with unit_of_work(session_factory) as session:
        ingest(session, records[:half])
    with session_factory() as session:
        before = stored_histograms(session), stored_health(session)
    with unit_of_work(session_factory) as session:
        again = ingest(session, records[:half])  # a whole replay: nothing inserted
    assert again.inserted == 0
    with session_factory() as session:
        assert (stored_histograms(session), stored_health(session)) == before
    with unit_of_work(session_factory) as session:
        mixed = ingest(session, records[half // 2 :])  # half replays, half new
    assert mixed.inserted == len(records) - half
    assert mixed.duplicates == half - half // 2

    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(PredictionLog)) == len(records)
        assert stored_health(session) == expected_health(session)
        assert stored_histograms(session) == expected_histograms(session)


def test_a_version_without_reference_data_gets_health_but_no_histograms(
    session_factory: sessionmaker[Session],
) -> None:
    BIN_CACHE.clear()
    with unit_of_work(session_factory) as session:
        seeded = seed_deployment(session)
        session.expunge_all()
    rng = np.random.default_rng(9)
    records = records_from(
        reference_frame(rng, 50), seeded.deployment.id, seeded.version.id, rng=rng
    )
    with unit_of_work(session_factory) as session:
        ingest(session, records)
    with session_factory() as session:
        assert stored_histograms(session) == Counter()
        assert sum(v["requests"] for v in stored_health(session).values()) == len(records)


def test_histogram_counts_take_each_feature_column_over_the_whole_batch() -> None:
    # Pure counting, no database: rows of several records, hours and versions are gathered per
    # (deployment, version, hour) and binned column by column.
    bins = VersionBins(
        1,
        {
            "x": numeric_bins(np.array([1.0, 2.0, 3.0, 4.0])),
            "c": categorical_bins(["a", "a", "b"]),
            PREDICTION: categorical_bins([0, 1]),
        },
    )
    edges = bins.features["x"].edges  # type: ignore[union-attr]
    low, high = float(edges[0]) - 1.0, float(edges[-1]) + 1.0
    rows = [
        {"deployment_id": 5, "model_version_id": 7, "bucket_start": T0 + 60,
         "inputs": [{"x": low, "c": "a"}, "not a row", {"x": None, "c": "zzz"}],
         "outputs": {"predictions": [0, 1, 1]}},
        {"deployment_id": 5, "model_version_id": 7, "bucket_start": T0 + 3599,
         "inputs": [{"x": high}], "outputs": {"predictions": "not a list"}},
        {"deployment_id": 5, "model_version_id": 7, "bucket_start": T0 + 3600,
         "inputs": [{"x": low, "c": "b"}], "outputs": {}},
        {"deployment_id": 5, "model_version_id": None, "bucket_start": T0,  # no version: none
         "inputs": [{"x": low}], "outputs": {"predictions": [0]}},
    ]  # fmt: skip
    counts = histogram_counts(rows, {7: bins})

    last = len(edges)  # the bin above the last edge
    assert counts == {
        (5, 7, T0, "x", 0): 1,
        (5, 7, T0, "x", last): 1,
        (5, 7, T0, "x", MISSING_BIN): 2,  # None and the row that is no object
        (5, 7, T0, "c", 0): 1,  # "a"
        (5, 7, T0, "c", 3): 1,  # "zzz": unseen (the reference has no other)
        (5, 7, T0, "c", MISSING_BIN): 2,  # absent from the 2nd row and the row that is no object
        (5, 7, T0, PREDICTION, 0): 1,
        (5, 7, T0, PREDICTION, 1): 2,
        (5, 7, T0 + 3600, "x", 0): 1,
        (5, 7, T0 + 3600, "c", 1): 1,
    }
