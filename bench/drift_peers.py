"""Drift on the same data: Konan's report from the rollups vs Evidently's DataDriftPreset vs a
plain scipy pass, each timed in a process of its own with its peak memory (ru_maxrss).

The data are bench/drift_bench.py's, draw for draw (numpy's PCG64 from seed 42, same order of
calls): a 5000-row reference and --rows logged rows (10 per record, over 7 days) x 20 features,
15 numeric and 5 categorical; n00-n03, c0 and c1 shifted. Every process prints a checksum of the
data it built, and the script refuses to compare processes that saw different data.

- konan:     a SQLite database is prepared in one process (drift_bench's seed and the real
             rollup update; not timed here, drift_bench.py reports it); a second process opens
             it and times `drift_report` over the 7 days. It then rolls up the next hour of
             traffic (rows/168) and times that update plus a new report: what a new window
             costs once the rollups exist;
- evidently: bench/.venvs/evidently (pinned), `Report([DataDriftPreset()]).run(current,
             reference)` on pandas frames;
- scipy:     per column, Wasserstein distance / reference std (numeric) and Jensen-Shannon
             distance of the category frequencies (categorical), drift at >= 0.1 — the tests
             Evidently and Konan choose for a reference over 1000 rows — plus a KS test.

Peak memory: the worker's ru_maxrss at the end, and its RSS just before the timed call (after
imports and data generation), so the part the drift computation itself adds is visible.

    .venv/bin/python bench/drift_peers.py                 # --rows 100000,1000000
    .venv/bin/python bench/drift_peers.py --rows 100000 --systems konan,scipy
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
NUMERIC = [f"n{i:02d}" for i in range(15)]
CATEGORICAL = [f"c{i}" for i in range(5)]
SHIFTED = {"n00", "n01", "n02", "n03", "c0", "c1"}
CATS = ["a", "b", "c", "d", "e", "f"]
ROWS_PER_RECORD = 10
BATCH = 1000  # records per generation batch, as drift_bench.py draws them
SYSTEMS = ("konan", "evidently", "scipy")


# ---- the data (numpy only: this part also runs in the Evidently venv) ---------------------------


def _columns(rng: Any, n: int, shifted: bool) -> dict[str, Any]:
    import numpy as np

    ref_p = np.array([0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    shift_p = np.array([0.1, 0.15, 0.2, 0.2, 0.2, 0.15])
    out: dict[str, Any] = {}
    for name in NUMERIC:
        mean = 0.5 if shifted and name in SHIFTED else 0.0
        out[name] = rng.normal(mean, 1.0, n)
    for name in CATEGORICAL:
        p = shift_p if shifted and name in SHIFTED else ref_p
        out[name] = rng.choice(CATS, n, p=p)
    return out


def generate(rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(reference, current) columns, the same draws as drift_bench.run makes."""
    import numpy as np

    rng = np.random.default_rng(42)
    reference = _columns(rng, 5000, shifted=False)
    rng.choice([0, 1], 5000)  # the reference predictions' bins
    n_records = rows // ROWS_PER_RECORD
    parts: list[dict[str, Any]] = []
    for start in range(0, n_records, BATCH):
        k = min(BATCH, n_records - start)
        parts.append(_columns(rng, k * ROWS_PER_RECORD, shifted=True))
        rng.choice([0, 1], k * ROWS_PER_RECORD)  # predictions
        rng.uniform(0, 1, k)  # times
        rng.lognormal(3.0, 0.7, k)  # latencies
    current = {c: np.concatenate([p[c] for p in parts]) for c in NUMERIC + CATEGORICAL}
    return reference, current


def checksum(current: dict[str, Any]) -> str:
    return f"{float(current['n00'].sum()):.6f}/{int((current['c0'] == 'a').sum())}"


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# ---- workers ------------------------------------------------------------------------------------


def worker_evidently(rows: int) -> dict[str, Any]:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference, current = generate(rows)
    ref = pd.DataFrame(reference)
    cur = pd.DataFrame(current)
    del reference
    before = rss_kb()
    t = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(cur, ref)
    seconds = time.perf_counter() - t
    drifted = _evidently_drifted(snapshot.dict())
    return {
        "seconds": seconds,
        "rss_before_kb": before,
        "peak_kb": peak_kb(),
        "checksum": checksum(current),
        "drifted": drifted,
    }


def _evidently_drifted(doc: dict[str, Any]) -> list[str]:
    """Columns whose ValueDrift metric is at or over its threshold, from the snapshot's dict."""
    out = []
    for metric in doc.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            threshold = config.get("threshold")
            value = metric.get("value")
            method = str(config.get("method", ""))
            if threshold is None or not isinstance(value, int | float):
                continue
            # p-value tests drift below the threshold, distances at or above it
            is_p = "p_value" in method or "test" in method.lower()
            if (value < threshold) if is_p else (value >= threshold):
                out.append(str(config.get("column")))
    return sorted(out)


def worker_scipy(rows: int) -> dict[str, Any]:
    import numpy as np
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import ks_2samp, wasserstein_distance

    reference, current = generate(rows)
    before = rss_kb()
    t = time.perf_counter()
    drifted = []
    ks_drifted = []
    for name in NUMERIC:
        ref, cur = reference[name], current[name]
        distance = wasserstein_distance(ref, cur) / np.std(ref)
        if distance >= 0.1:
            drifted.append(name)
        if ks_2samp(ref, cur).pvalue < 0.05:
            ks_drifted.append(name)
    for name in CATEGORICAL:
        ref_values, ref_counts = np.unique(reference[name], return_counts=True)
        cur_values, cur_counts = np.unique(current[name], return_counts=True)
        keys = sorted(set(ref_values) | set(cur_values))
        p = np.array([dict(zip(ref_values, ref_counts, strict=True)).get(k, 0) for k in keys])
        q = np.array([dict(zip(cur_values, cur_counts, strict=True)).get(k, 0) for k in keys])
        if jensenshannon(p / p.sum(), q / q.sum()) >= 0.1:
            drifted.append(name)
    seconds = time.perf_counter() - t
    return {
        "seconds": seconds,
        "rss_before_kb": before,
        "peak_kb": peak_kb(),
        "checksum": checksum(current),
        "drifted": sorted(drifted),
        "ks_drifted_numeric": ks_drifted,
    }


def worker_konan_prepare(rows: int, db: str) -> dict[str, Any]:
    """drift_bench's seed and rollup update into a SQLite file (not timed here)."""
    import drift_bench
    import numpy as np

    from konan.db import migrate
    from konan.db.engine import make_engine, make_session_factory, unit_of_work
    from konan.monitoring import rollups

    engine = make_engine(db)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    rng = np.random.default_rng(42)
    deployment_id, version_id = drift_bench._seed(factory, rng)
    n_records = rows // ROWS_PER_RECORD
    first_n00 = 0.0
    first_a = 0
    t = time.perf_counter()
    for start in range(0, n_records, BATCH):
        records = drift_bench._records(
            rng, min(BATCH, n_records - start), deployment_id, version_id, 7.0, start, n_records
        )
        for r in records:
            for row in r["inputs"]:
                first_n00 += row["n00"]
                first_a += row["c0"] == "a"
        with unit_of_work(factory) as session:
            rollups.update(session, records)
    engine.dispose()
    return {
        "deployment_id": deployment_id,
        "version_id": version_id,
        "prepare_s": time.perf_counter() - t,
        "checksum": f"{first_n00:.6f}/{first_a}",
        "rng_state": rng.bit_generator.state["state"]["state"],
    }


def worker_konan_query(rows: int, db: str, deployment_id: int, version_id: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    import drift_bench
    import numpy as np

    from konan.db.engine import make_engine, make_session_factory, unit_of_work
    from konan.deployments.orm import Deployment
    from konan.monitoring import rollups
    from konan.monitoring.drift import drift_report

    engine = make_engine(db)
    factory = make_session_factory(engine)
    start = datetime.fromtimestamp(drift_bench.T0, UTC)
    end = datetime.fromtimestamp(drift_bench.T0 + 7 * 86400, UTC)
    before = rss_kb()
    timings = []
    report: dict[str, Any] = {}
    for _ in range(3):
        with factory() as session:
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            t = time.perf_counter()
            report = drift_report(session, deployment, start=start, end=end)
            timings.append(time.perf_counter() - t)
    drifted = sorted(f["name"] for f in report["features"] if f["drifted"])

    # The next window: one more hour of traffic at the same rate, rolled up, then a new report
    # over the 7 days plus that hour; twice, since the first update in a fresh process also
    # loads the version's reference bins and compiles the statements (a running consumer has).
    rng = np.random.default_rng(7)
    hour_records = max(1, rows // ROWS_PER_RECORD // 168)
    windows = []
    for hour in range(2):
        records = drift_bench._records(
            rng, hour_records, deployment_id, version_id, 1 / 24, 0, hour_records
        )
        for i, r in enumerate(records):
            r["request_id"] = f"next{hour}-{i}"
            r["at"] += 7 * 86400 + hour * 3600
            r["bucket_start"] = int(r["at"]) // 60 * 60
        t = time.perf_counter()
        with unit_of_work(factory) as session:
            rollups.update(session, records)
        update_s = time.perf_counter() - t
        with factory() as session:
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            t = time.perf_counter()
            drift_report(
                session,
                deployment,
                start=start,
                end=datetime.fromtimestamp(drift_bench.T0 + 7 * 86400 + (hour + 1) * 3600, UTC),
            )
            windows.append((update_s, time.perf_counter() - t))
    update_s, next_report_s = windows[-1]
    engine.dispose()
    return {
        "seconds": sorted(timings)[1],
        "seconds_all": timings,
        "rss_before_kb": before,
        "peak_kb": peak_kb(),
        "drifted": drifted,
        "next_window_rows": hour_records * ROWS_PER_RECORD,
        "next_window_update_s": update_s,
        "next_window_report_s": next_report_s,
        "first_window_cold_s": list(windows[0]),
    }


# ---- driver -------------------------------------------------------------------------------------


def run_worker(python: Path, args: list[str], extra_env: dict[str, str] | None = None) -> Any:
    env = {**os.environ, **(extra_env or {})}
    done = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--worker", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=BENCH.parent,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"worker {args[0]} failed (exit {done.returncode}): " + " | ".join(tail))


def measure(rows: int, systems: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    sums: dict[str, str] = {}
    project_python = Path(sys.executable)
    env = {"PYTHONPATH": os.pathsep.join([str(BENCH.parent), str(BENCH)])}
    if "konan" in systems:
        with tempfile.TemporaryDirectory(prefix="konan-drift-peers-") as tmp:
            db = f"sqlite:///{Path(tmp) / 'drift.db'}"
            try:
                prep = run_worker(project_python, ["konan-prepare", str(rows), db], env)
                res = run_worker(
                    project_python,
                    [
                        "konan-query",
                        str(rows),
                        db,
                        str(prep["deployment_id"]),
                        str(prep["version_id"]),
                    ],
                    env,
                )
                sums["konan"] = prep["checksum"]
                out.append({"system": "konan", "rows": rows, "prepare_s": prep["prepare_s"], **res})
            except RuntimeError as exc:
                out.append({"system": "konan", "rows": rows, "not_measured": str(exc)})
    if "evidently" in systems:
        try:
            sys.path.insert(0, str(BENCH))
            from lib.venvs import PeerUnavailable, ensure_venv

            try:
                python = ensure_venv("evidently")
                res = run_worker(python, ["evidently", str(rows)], {"PYTHONPATH": str(BENCH)})
                sums["evidently"] = res["checksum"]
                out.append({"system": "evidently", "rows": rows, **res})
            except PeerUnavailable as exc:
                out.append({"system": "evidently", "rows": rows, "not_measured": str(exc)})
        except RuntimeError as exc:
            out.append({"system": "evidently", "rows": rows, "not_measured": str(exc)})
    if "scipy" in systems:
        try:
            res = run_worker(project_python, ["scipy", str(rows)], env)
            sums["scipy"] = res["checksum"]
            out.append({"system": "scipy", "rows": rows, **res})
        except RuntimeError as exc:
            out.append({"system": "scipy", "rows": rows, "not_measured": str(exc)})
    # The same data everywhere, or no comparison (float sums agree to rounding only).
    values = [(float(v.split("/")[0]), int(v.split("/")[1])) for v in sums.values()]
    if any(abs(a[0] - values[0][0]) > 1e-3 or a[1] != values[0][1] for a in values):
        raise SystemExit(f"the systems generated different data: {sums}")
    return out


def print_table(results: list[dict[str, Any]], info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Drift report, same data — {info['cpus']} CPUs, {info['date']}")
    for col in (
        "rows",
        "system",
        "time s",
        "x konan",
        "peak RSS MB",
        "RSS before MB",
        "next window s",
        "drifted",
    ):
        table.add_column(col, justify="left" if col in ("system", "drifted") else "right")
    konan = {r["rows"]: r["seconds"] for r in results if r["system"] == "konan" and "seconds" in r}
    for r in results:
        if "not_measured" in r:
            table.add_row(f"{r['rows']:,}", r["system"], "not measured", "", "", "", "", "")
            continue
        ratio = r["seconds"] / konan[r["rows"]] if r["rows"] in konan else None
        nxt = (
            f"{r['next_window_update_s'] + r['next_window_report_s']:.3f}"
            if "next_window_update_s" in r
            else f"{r['seconds']:.3f} (all again)"
        )
        table.add_row(
            f"{r['rows']:,}",
            r["system"],
            f"{r['seconds']:.3f}",
            "—" if ratio is None else f"{ratio:,.1f}",
            f"{r['peak_kb'] / 1024:,.0f}",
            f"{r['rss_before_kb'] / 1024:,.0f}",
            nxt,
            ",".join(r["drifted"]),
        )
    console = Console(width=150)
    console.print(table)
    for r in results:
        if "not_measured" in r:
            console.print(f"not measured: {r['system']} {r['rows']:,}: {r['not_measured']}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "evidently":
            result = worker_evidently(int(rest[0]))
        elif kind == "scipy":
            result = worker_scipy(int(rest[0]))
        elif kind == "konan-prepare":
            result = worker_konan_prepare(int(rest[0]), rest[1])
        elif kind == "konan-query":
            result = worker_konan_query(int(rest[0]), rest[1], int(rest[2]), int(rest[3]))
        else:
            raise SystemExit(f"unknown worker {kind}")
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", default="100000,1000000", help="logged rows, comma-separated")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    from lib.common import machine, write_results

    info = machine()
    systems = [s for s in args.systems.split(",") if s]
    results: list[dict[str, Any]] = []
    for rows in [int(r) for r in args.rows.split(",")]:
        print(f"{rows:,} rows ...", flush=True)
        results.extend(measure(rows, systems))
    print_table(results, info)
    path = write_results(
        "drift_peers",
        {"benchmark": "drift_peers", "machine": info, "config": vars(args), "results": results},
    )
    print(f"\nJSON: {path.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
