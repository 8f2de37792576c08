"""Drift over 1M logged rows x 20 features, answered from the rollups.

Generates ``--rows`` prediction-log rows (10 per record, spread over ``--days``) with 15 numeric
and 5 categorical features, 4 numeric and 2 categorical of them shifted, and feeds them through
the real rollup update (`konan.monitoring.rollups.update`, batches of 1000 records) on SQLite in
a temp dir, and on PostgreSQL too when it answers. Then it times the drift query over the whole
window (`konan.monitoring.drift.drift_report`) and, separately, the full ingest path (raw insert
+ rollups, `konan.monitoring.ingest.ingest`) on ``--ingest-records`` records.

    .venv/bin/python bench/drift_bench.py [--rows 1000000] [--pg postgresql+psycopg://…]

Prints a table and writes JSON to bench/results/drift_bench-<time>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from konan.db import migrate
from konan.db.engine import make_engine, make_session_factory, unit_of_work
from konan.deployments.orm import Deployment, DeploymentRevision
from konan.governance.orm import Project, User
from konan.monitoring import rollups
from konan.monitoring.drift import drift_report
from konan.monitoring.ingest import ingest
from konan.registry.binning import categorical_bins, numeric_bins
from konan.registry.orm import Dataset, DatasetVersion, Model, ModelVersion

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NUMERIC = [f"n{i:02d}" for i in range(15)]
CATEGORICAL = [f"c{i}" for i in range(5)]
SHIFTED = {"n00", "n01", "n02", "n03", "c0", "c1"}
CATS = ["a", "b", "c", "d", "e", "f"]
REF_P = np.array([0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
SHIFT_P = np.array([0.1, 0.15, 0.2, 0.2, 0.2, 0.15])
ROWS_PER_RECORD = 10
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def _columns(rng: np.random.Generator, n: int, shifted: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in NUMERIC:
        mean = 0.5 if shifted and name in SHIFTED else 0.0
        out[name] = rng.normal(mean, 1.0, n)
    for name in CATEGORICAL:
        p = SHIFT_P if shifted and name in SHIFTED else REF_P
        out[name] = rng.choice(CATS, n, p=p)
    return out


def _seed(factory: Any, rng: np.random.Generator) -> tuple[int, int]:
    reference = _columns(rng, 5000, shifted=False)
    bins: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for name, values in reference.items():
        if name in NUMERIC:
            bins[name] = numeric_bins(values).to_json()
            stats[name] = {
                "count": int(values.size),
                "min": float(values.min()),
                "max": float(values.max()),
                "std": float(values.std(ddof=1)),
            }
        else:
            bins[name] = categorical_bins(values).to_json()
            stats[name] = {"count": int(values.size)}
    bins[rollups.PREDICTION] = categorical_bins(rng.choice([0, 1], 5000).tolist()).to_json()
    with unit_of_work(factory) as session:
        project = Project(name=f"bench-{uuid.uuid4().hex[:6]}")
        user = User(username=f"bench-{uuid.uuid4().hex[:6]}", password_hash="-")  # noqa: S106 - never logs in
        session.add_all([project, user])
        session.flush()
        dataset = Dataset(project_id=project.id, name="reference")
        model = Model(project_id=project.id, name="bench", task="classification")
        session.add_all([dataset, model])
        session.flush()
        dataset_version = DatasetVersion(
            dataset_id=dataset.id,
            version=1,
            sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
            format="csv",
            size=1,
            row_count=5000,
            stats=stats,
            reference_bins=bins,
        )
        session.add(dataset_version)
        session.flush()
        version = ModelVersion(
            model_id=model.id,
            version=1,
            flavor="sklearn",
            artifact_sha256="0" * 64,
            artifact_size=1,
            created_by_id=user.id,
            reference_dataset_version_id=dataset_version.id,
            signature={"inputs": [{"name": n} for n in NUMERIC + CATEGORICAL]},
        )
        deployment = Deployment(
            name="bench-live", project_id=project.id, model_id=model.id, runtime="local"
        )
        session.add_all([version, deployment])
        session.flush()
        session.add(
            DeploymentRevision(
                deployment_id=deployment.id, revision=1, champion_version_id=version.id
            )
        )
        return deployment.id, version.id


def _records(
    rng: np.random.Generator,
    n_records: int,
    deployment_id: int,
    version_id: int,
    days: float,
    offset: int,
    total: int,
) -> list[dict[str, Any]]:
    """Records ``offset`` .. ``offset + n_records`` of ``total``, in time order across the
    window as a stream delivers them (each batch covers a short stretch of time)."""
    n = n_records * ROWS_PER_RECORD
    columns = _columns(rng, n, shifted=True)
    lists = {k: v.tolist() for k, v in columns.items()}
    rows = [{k: lists[k][i] for k in lists} for i in range(n)]
    predictions = rng.choice([0, 1], n).tolist()
    span = days * 86400
    at = T0 + (offset + np.arange(n_records) + rng.uniform(0, 1, n_records)) / total * span
    latency = rng.lognormal(3.0, 0.7, n_records)
    out = []
    for r in range(n_records):
        lo = r * ROWS_PER_RECORD
        out.append(
            {
                "request_id": f"b{offset + r}",
                "deployment_id": deployment_id,
                "model_version_id": version_id,
                "role": "champion",
                "at": float(at[r]),
                "bucket_start": int(at[r]) // 60 * 60,
                "inputs": rows[lo : lo + ROWS_PER_RECORD],
                "outputs": {"predictions": predictions[lo : lo + ROWS_PER_RECORD]},
                "latency_ms": float(latency[r]),
                "status_code": 200,
                "error": None,
            }
        )
    return out


def run(url: str, label: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    rng = np.random.default_rng(42)
    deployment_id, version_id = _seed(factory, rng)
    rollups.BIN_CACHE.clear()

    n_records = args.rows // ROWS_PER_RECORD
    batch = 1000
    generate = rollup = 0.0
    for start in range(0, n_records, batch):
        t = time.perf_counter()
        records = _records(
            rng,
            min(batch, n_records - start),
            deployment_id,
            version_id,
            args.days,
            start,
            n_records,
        )
        generate += time.perf_counter() - t
        t = time.perf_counter()
        with unit_of_work(factory) as session:
            rollups.update(session, records)
        rollup += time.perf_counter() - t
        done = min(start + batch, n_records)
        print(f"\r{label}: {done * ROWS_PER_RECORD:>9,} rows rolled up", end="", file=sys.stderr)
    print(file=sys.stderr)

    with factory() as session:
        histogram_rows = session.scalar(
            sa.text("SELECT count(*) FROM monitoring_feature_histograms")
        )
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        timings = []
        report: dict[str, Any] = {}
        for _ in range(args.repeat):
            t = time.perf_counter()
            report = drift_report(
                session,
                deployment,
                start=datetime.fromtimestamp(T0, UTC),
                end=datetime.fromtimestamp(T0 + args.days * 86400, UTC),
            )
            timings.append(time.perf_counter() - t)
    drifted = sorted(f["name"] for f in report["features"] if f["drifted"])

    # The full ingest path (raw insert + rollups in one transaction) on fresh request ids.
    t = time.perf_counter()
    ingest_records = _records(
        rng, args.ingest_records, deployment_id, version_id, args.days, 0, args.ingest_records
    )
    for i, r in enumerate(ingest_records):
        r["request_id"] = f"i{i}"
    for r in ingest_records:
        r.pop("bucket_start")
    gen_ingest = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, len(ingest_records), batch):
        with unit_of_work(factory) as session:
            result = ingest(session, ingest_records[start : start + batch])
            assert not result.rejected, result.rejected[:3]
    ingest_s = time.perf_counter() - t
    engine.dispose()
    return {
        "backend": label,
        "rows": n_records * ROWS_PER_RECORD,
        "records": n_records,
        "features": len(NUMERIC) + len(CATEGORICAL),
        "histogram_rows": histogram_rows,
        "rollup_rows_per_s": n_records * ROWS_PER_RECORD / rollup,
        "generate_s": generate,
        "drift_query_s_median": statistics.median(timings),
        "drift_query_s_max": max(timings),
        "drift_query_s_first": timings[0],
        "drifted_features": drifted,
        "dataset_drift": report["dataset_drift"],
        "ingest_records": args.ingest_records,
        "ingest_rows_per_s": args.ingest_records * ROWS_PER_RECORD / ingest_s,
        "ingest_records_per_s": args.ingest_records / ingest_s,
        "ingest_generate_s": gen_ingest,
    }


def _pg_url(admin: str) -> str | None:
    try:
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        name = f"konan_bench_{uuid.uuid4().hex[:8]}"
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL not reachable, skipped: {str(exc).splitlines()[0]}", file=sys.stderr)
        return None
    return admin.rsplit("/", 1)[0] + f"/{name}"


def _drop_pg(admin: str, url: str) -> None:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ingest-records", type=int, default=20_000)
    parser.add_argument("--pg", default=PG_URL, help="admin URL; '' to skip PostgreSQL")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(run(f"sqlite:///{Path(tmp) / 'bench.db'}", "sqlite", args))
    if args.pg:
        url = _pg_url(args.pg)
        if url is not None:
            try:
                results.append(run(url, "postgresql", args))
            finally:
                _drop_pg(args.pg, url)

    header = (
        f"{'backend':<11} {'rows':>9} {'hist rows':>9} {'rollup rows/s':>13} "
        f"{'drift median':>12} {'drift max':>9} {'ingest rows/s':>13} {'drifted'}"
    )
    print(header)
    for r in results:
        print(
            f"{r['backend']:<11} {r['rows']:>9,} {r['histogram_rows']:>9,} "
            f"{r['rollup_rows_per_s']:>13,.0f} {r['drift_query_s_median'] * 1000:>10.1f}ms "
            f"{r['drift_query_s_max'] * 1000:>7.1f}ms {r['ingest_rows_per_s']:>13,.0f} "
            f"{','.join(r['drifted_features'])}"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"drift_bench-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
