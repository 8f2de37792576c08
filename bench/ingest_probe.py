"""Where the monitor's time goes on PostgreSQL, and what COPY would change: a probe, not a
product path (it does not change konan/).

On a fresh PostgreSQL database (created and dropped here) with logging_bench.py's deployment,
--records prediction records shaped as the model server writes them (one 20-feature row each)
are stored in batches of --batch, each variant in its own fresh table state:

- ingest:          `konan.monitoring.ingest.ingest` as the monitor calls it (validation, INSERT …
                   ON CONFLICT DO NOTHING via psycopg's pipelined executemany, rollups);
- ingest+orjson:   the same with psycopg's JSONB dumper switched to orjson (process-wide
                   `psycopg.types.json.set_json_dumps`), instead of the stdlib json module;
- insert only:     the same INSERT statement without the rollups;
- copy+insert:     COPY of the batch into a temporary table (JSONB as text via orjson), then one
                   `INSERT INTO prediction_logs SELECT … ON CONFLICT DO NOTHING`, no rollups:
                   the idempotent insert with COPY's transfer;
- rollups only:    `rollups.update` on the batch's rows;
- ingest again:    plain ingest once more (the first run also warms caches and the bin cache).

    .venv/bin/python bench/ingest_probe.py [--records 20000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from lib.common import machine, write_results
from logging_bench import PG_ADMIN, create_database, drop_database, seed
from serving import FEATURES, N_FEATURES

COLUMNS = (
    "request_id",
    "deployment_id",
    "model_version_id",
    "role",
    "at",
    "bucket_start",
    "inputs",
    "outputs",
    "latency_ms",
    "status_code",
    "error",
)


def records(X: np.ndarray, n: int, deployment_id: int, version_id: int, tag: str) -> list[Any]:
    now = time.time()
    out = []
    for i in range(n):
        row = X[i % len(X)]
        out.append(
            {
                "request_id": f"{tag}-{i}",
                "deployment_id": deployment_id,
                "model_version_id": version_id,
                "role": "champion",
                "at": now + i * 1e-4,
                "inputs": [dict(zip(FEATURES, map(float, row), strict=True))],
                "outputs": {"predictions": [int(i % 2)], "probabilities": [[0.4, 0.6]]},
                "latency_ms": 0.8,
                "status_code": 200,
                "error": None,
            }
        )
    # as the monitor sees them: decoded from the JSON the server wrote
    return [orjson.loads(orjson.dumps(r)) for r in out]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--pg", default=PG_ADMIN)
    args = parser.parse_args()

    import psycopg.types.json
    from sklearn.datasets import make_classification

    from konan.db.engine import make_engine, make_session_factory, unit_of_work
    from konan.monitoring import ingest as ingest_mod
    from konan.monitoring import rollups

    X, _ = make_classification(n_samples=5000, n_features=N_FEATURES, random_state=42)
    url = create_database(args.pg)
    results: dict[str, float] = {}
    try:
        ids = seed(url, X)
        engine = make_engine(url)
        factory = make_session_factory(engine)

        def timed(name: str, fn: Any) -> None:
            batch_records = records(X, args.records, ids[0], ids[1], name)
            t = time.perf_counter()
            for start in range(0, len(batch_records), args.batch):
                with unit_of_work(factory) as session:
                    fn(session, batch_records[start : start + args.batch])
            seconds = time.perf_counter() - t
            results[name] = args.records / seconds
            print(f"{name:16s} {args.records / seconds:10,.0f} records/s", flush=True)

        def rows_of(batch: list[Any]) -> list[dict[str, Any]]:
            return [ingest_mod._to_row(r) for r in batch]

        def plain_ingest(session: Any, batch: list[Any]) -> None:
            result = ingest_mod.ingest(session, batch)
            assert result.inserted == len(batch), result

        def insert_only(session: Any, batch: list[Any]) -> None:
            session.execute(ingest_mod._insert_for(session), rows_of(batch))

        def rollups_only(session: Any, batch: list[Any]) -> None:
            rollups.update(session, rows_of(batch))

        def copy_insert(session: Any, batch: list[Any]) -> None:
            rows = rows_of(batch)
            conn = session.connection().connection.driver_connection
            with conn.cursor() as cur:
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS staged_logs "
                    "(LIKE prediction_logs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                with cur.copy(f"COPY staged_logs ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row(
                            (
                                r["request_id"],
                                r["deployment_id"],
                                r["model_version_id"],
                                r["role"],
                                r["at"],
                                r["bucket_start"],
                                orjson.dumps(r["inputs"]).decode(),
                                orjson.dumps(r["outputs"]).decode(),
                                r["latency_ms"],
                                r["status_code"],
                                r["error"],
                            )
                        )
                cols = ", ".join(COLUMNS)
                cur.execute(
                    f"INSERT INTO prediction_logs ({cols}) SELECT {cols} FROM staged_logs "  # noqa: S608 - constant names
                    "ON CONFLICT (request_id, role) DO NOTHING"
                )
                assert cur.rowcount == len(rows), cur.rowcount

        timed("ingest", plain_ingest)
        timed("insert only", insert_only)
        timed("copy+insert", copy_insert)
        timed("rollups only", rollups_only)
        timed("ingest again", plain_ingest)  # the first run also warms caches
        psycopg.types.json.set_json_dumps(lambda obj: orjson.dumps(obj).decode())
        try:
            timed("ingest+orjson", plain_ingest)
        finally:
            import json

            psycopg.types.json.set_json_dumps(json.dumps)
        engine.dispose()
    finally:
        drop_database(args.pg, url)
    write_results(
        "ingest_probe",
        {
            "benchmark": "ingest_probe",
            "machine": machine(),
            "config": vars(args),
            "records_per_s": results,
            "at": datetime.now(UTC).isoformat(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
