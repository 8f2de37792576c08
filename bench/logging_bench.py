"""Logging benchmark: prediction-log records/s from model servers into PostgreSQL, exactly once.

The whole monitoring pipeline, real parts only: Konan model servers (ONNX LogisticRegression,
API key, validation, logging on) → the log stream (the spool folder they share with the monitor,
or the Redis stream of scale-out mode) → `konan monitor` (MonitorConsumer, a subprocess) →
prediction_logs + rollups (health minutes, feature histograms over the version's reference
bins) in a fresh PostgreSQL database that this script creates and drops.

wrk (bench/lua/post_ids.lua) sends every request with its own X-Request-Id (the header the model
server honours, echoed in its answer) and writes the ids of the 2xx answers to a file; after the
pipeline has drained, the set of 2xx ids is compared with the stored request ids: each 2xx
request must have exactly one stored record.

Two phases per stream:

- live:    the monitor runs while wrk drives the servers for --duration s; records stored per
           second during the load, and the backlog left when it stops;
- backlog: the monitor is stopped, the servers are driven for --duration s, then stopped; the
           monitor is started and the time from its first to its last stored row gives what
           the consumer alone sustains (its CPU time and PostgreSQL's are read from /proc).

    .venv/bin/python bench/logging_bench.py                        # spool and redis, ~3 minutes
    .venv/bin/python bench/logging_bench.py --streams spool --duration 5 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from lib.common import (
    BENCH,
    exit_on_sigterm,
    machine,
    median,
    run_wrk,
    stop_process,
    wait_for,
    write_results,
)
from serving import (
    FEATURES,
    N_FEATURES,
    SIGNATURE,
    Server,
    body_for,
    check_answers,
    start_key_server,
    start_konan,
    to_onnx_bytes,
    train,
)

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/14"  # a database of its own: the stream name is fixed
STREAM = "konan:prediction-logs"
LUA_IDS = BENCH / "lua" / "post_ids.lua"


# ---- database -----------------------------------------------------------------------------------


def create_database(admin: str) -> str:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    name = f"konan_bench_log_{uuid.uuid4().hex[:8]}"
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return admin.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin: str, url: str) -> None:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            name = url.rsplit("/", 1)[1]
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def seed(url: str, X: np.ndarray) -> tuple[int, int]:
    """Schema, and a deployment whose model version has a reference dataset with bins for the
    20 features, so the rollups (health minutes and feature histograms) are all updated."""
    from konan.db import migrate
    from konan.db.engine import make_engine, make_session_factory, unit_of_work
    from konan.deployments.orm import Deployment, DeploymentRevision
    from konan.governance.orm import Project, User
    from konan.registry.binning import numeric_bins
    from konan.registry.orm import Dataset, DatasetVersion, Model, ModelVersion

    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        factory = make_session_factory(engine)
        reference = X[:5000]
        bins = {f: numeric_bins(reference[:, i]).to_json() for i, f in enumerate(FEATURES)}
        stats = {
            f: {
                "count": int(reference.shape[0]),
                "min": float(reference[:, i].min()),
                "max": float(reference[:, i].max()),
                "std": float(reference[:, i].std(ddof=1)),
            }
            for i, f in enumerate(FEATURES)
        }
        with unit_of_work(factory) as session:
            project = Project(name="bench-logging")
            user = User(username="bench-logging", password_hash="-")  # noqa: S106 - never logs in
            session.add_all([project, user])
            session.flush()
            dataset = Dataset(project_id=project.id, name="reference")
            model = Model(project_id=project.id, name="lr", task="classification")
            session.add_all([dataset, model])
            session.flush()
            dataset_version = DatasetVersion(
                dataset_id=dataset.id,
                version=1,
                sha256=hashlib.sha256(b"bench-logging-reference").hexdigest(),
                format="csv",
                size=1,
                row_count=int(reference.shape[0]),
                stats=stats,
                reference_bins=bins,
            )
            session.add(dataset_version)
            session.flush()
            version = ModelVersion(
                model_id=model.id,
                version=1,
                flavor="onnx",
                artifact_sha256="0" * 64,
                artifact_size=1,
                created_by_id=user.id,
                reference_dataset_version_id=dataset_version.id,
                signature=SIGNATURE,
            )
            deployment = Deployment(
                name="bench-logging", project_id=project.id, model_id=model.id, runtime="local"
            )
            session.add_all([version, deployment])
            session.flush()
            session.add(
                DeploymentRevision(
                    deployment_id=deployment.id, revision=1, champion_version_id=version.id
                )
            )
            return deployment.id, version.id
    finally:
        engine.dispose()


# ---- /proc CPU time ---------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def postgres_pids() -> list[int]:
    out = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                out.append(int(comm.parent.name))
        except OSError:
            continue
    return out


# ---- the pipeline ------------------------------------------------------------------------------


class Pipeline:
    """The servers, the monitor and the database of one stream kind ("spool" or "redis")."""

    def __init__(self, kind: str, root: Path, db_url: str, args: argparse.Namespace) -> None:
        self.kind = kind
        self.root = root / kind
        self.root.mkdir(parents=True)
        self.db_url = db_url
        self.args = args
        self.spool = self.root / "spool"  # shared by servers and monitor in embedded mode
        self.engine = sa.create_engine(db_url)
        self.monitor: subprocess.Popen[bytes] | None = None
        self.servers: list[Server] = []
        self.started = 0  # server generations, each in a folder of its own

    def settings_env(self) -> dict[str, str]:
        env = {"KONAN_DATABASE__URL": self.db_url, "KONAN_MONITORING__SPOOL_DIR": str(self.spool)}
        if self.kind == "redis":
            env.update(
                {
                    "KONAN_MODE": "scale-out",
                    "KONAN_QUEUE__BROKER_URL": REDIS,
                    "KONAN_ARTIFACTS__URI": str(self.root / "artifacts"),
                    "KONAN_AUTH__SECRET_KEY": secrets.token_urlsafe(32),
                }
            )
        return env

    def start_servers(
        self, model: Any, keys_url: str, secret: str, ids: tuple[int, int], X: np.ndarray
    ) -> None:
        onnx = to_onnx_bytes(model)
        for n in range(self.args.servers):
            env = self.settings_env()
            if self.kind == "redis":
                # each replica keeps its own fallback spool behind Redis
                env["KONAN_MONITORING__SPOOL_DIR"] = str(self.root / f"server-spool-{n}")
                env.pop("KONAN_ARTIFACTS__URI")  # start_konan points it at the bench's store
            self.servers.append(
                start_konan(
                    self.root,
                    "lr",
                    "onnx",
                    onnx,
                    keys_url,
                    secret,
                    self.args.server_cpus or None,
                    [],
                    deployment_id=ids[0],
                    model_version_id=ids[1],
                    env_extra=env,
                    tag=f"-{self.started}-{n}",
                )
            )
        self.started += 1
        expected = [int(p) for p in model.predict(X[:100])]
        check_answers(self.servers, X, expected)

    def stop_servers(self) -> None:
        for s in self.servers:
            stop_process(s.proc)  # SIGTERM: the server flushes and seals its log
        self.servers = []

    def start_monitor(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
        env.update(self.settings_env())
        env["KONAN_DATA_DIR"] = str(self.root / "monitor-data")
        if self.args.batch_size:
            env["KONAN_MONITORING__INGEST_BATCH_SIZE"] = str(self.args.batch_size)
        konan = Path(sys.executable).parent / "konan"
        log = (self.root / "monitor.err").open("ab")
        self.monitor = subprocess.Popen(
            [str(konan), "monitor"], env=env, stdout=log, stderr=log, cwd=self.root
        )
        log.close()

    def stop_monitor(self) -> None:
        if self.monitor is not None:
            stop_process(self.monitor, timeout=30)
            self.monitor = None

    def stored(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(sa.text("SELECT count(*) FROM prediction_logs")) or 0)

    def backlog(self) -> int:
        """Records waiting: lines in spool segments (and Redis stream entries)."""
        waiting = 0
        folders = [self.spool, *self.root.glob("server-spool-*")]
        for folder in folders:
            for path in folder.glob("*") if folder.exists() else []:
                if path.name.endswith((".sealed", ".open")):
                    try:
                        waiting += path.read_bytes().count(b"\n")
                    except OSError:
                        continue
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS)
            try:
                waiting += int(client.xlen(STREAM))
            finally:
                client.close()
        return waiting

    def load(self, body: Path, auth: str | None, phase: str) -> dict[str, Any]:
        """wrk against every server at once, for --duration s; 2xx ids to files."""
        results: list[dict[str, Any]] = []
        files: list[Path] = []
        errors: list[BaseException] = []

        def one(n: int, s: Server) -> None:
            ids = self.root / f"ids-{phase}-{n}.txt"
            files.append(ids)
            try:
                r = run_wrk(
                    s.url,
                    body,
                    auth=auth,
                    connections=self.args.connections,
                    duration=self.args.duration,
                    cpus=self.args.wrk_cpus or None,
                    script=LUA_IDS,
                    extra_env={
                        "WRK_ID_PREFIX": f"{self.kind}-{phase}-{n}",
                        "WRK_IDS_FILE": str(ids),
                    },
                )
                results.append(r)
            except BaseException as exc:  # re-raised below, in the caller's thread
                errors.append(exc)

        workers = [threading.Thread(target=one, args=(n, s)) for n, s in enumerate(self.servers)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if errors:
            raise errors[0]
        ok_ids = [line for f in files for line in f.read_text().split("\n") if line]
        return {
            "requests": sum(r["requests"] for r in results),
            "sent": sum(r["raw"]["sent"] for r in results),
            "ok": len(ok_ids),
            "ok_ids": ok_ids,
            "non_2xx": sum(r["non_2xx"] for r in results),
            "socket_errors": sum(r["socket_errors"] for r in results),
            "seconds": median([r["raw"]["duration_us"] / 1e6 for r in results]),
            "p50_ms": median([r["p50_ms"] for r in results]),
            "p99_ms": median([r["p99_ms"] for r in results]),
        }

    def wait_drained(
        self,
        timeout: float,
        cpu_pids: tuple[Callable[[], list[int]], Callable[[], list[int]]] = (list, list),
    ) -> list[tuple[float, int, float, float]]:
        """Sample (time, stored, CPU s of the processes cpu_pids[0]() and cpu_pids[1]()) every
        0.2 s until the backlog is empty and the count has not moved for 2 s."""
        samples: list[tuple[float, int, float, float]] = []
        deadline = time.monotonic() + timeout
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            n = self.stored()
            now = time.monotonic()
            if samples and n != samples[-1][1]:
                still_since = now
            samples.append((now, n, cpu_seconds(cpu_pids[0]()), cpu_seconds(cpu_pids[1]())))
            if now - still_since >= 2.0 and self.backlog() == 0:
                return samples
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind}: not drained within {timeout} s (stored {samples[-1]})")

    def check_exactly_once(self, ok_ids: list[str]) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT request_id, count(*) FROM prediction_logs GROUP BY request_id")
            ).all()
        stored = {r[0]: int(r[1]) for r in rows}
        ok = set(ok_ids)
        once = sum(1 for i in ok if stored.get(i) == 1)
        return {
            "ok_requests": len(ok_ids),
            "ok_unique_ids": len(ok),
            "stored_records": sum(stored.values()),
            "ok_with_exactly_one_record": once,
            "ok_missing": sum(1 for i in ok if i not in stored),
            "ok_more_than_one": sum(1 for i in ok if stored.get(i, 0) > 1),
            "stored_without_2xx": sum(1 for i in stored if i not in ok),
            "share_exactly_once": once / len(ok_ids) if ok_ids else float("nan"),
        }

    def close(self) -> None:
        self.stop_servers()
        self.stop_monitor()
        self.engine.dispose()
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS)
            try:
                client.delete(STREAM, f"{STREAM}:dead")
            finally:
                client.close()


def rate(samples: list[tuple[float, int, float, float]]) -> dict[str, float]:
    """From the sample before the stored count first moved to the first sample at its final
    value: records, seconds, records/s and the CPU seconds of the two process sets."""
    final = samples[-1][1]
    first = next((i for i, s in enumerate(samples) if s[1] != samples[0][1]), None)
    if first is None:
        return {"records": 0, "seconds": 0.0, "records_per_s": 0.0, "cpu_a": 0.0, "cpu_b": 0.0}
    last = next(i for i, s in enumerate(samples) if s[1] == final)
    a, b = samples[first - 1], samples[last]
    seconds = b[0] - a[0]
    return {
        "records": b[1] - a[1],
        "seconds": seconds,
        "records_per_s": (b[1] - a[1]) / seconds if seconds > 0 else 0.0,
        "cpu_a": b[2] - a[2],
        "cpu_b": b[3] - a[3],
    }


def run_stream(
    kind: str,
    root: Path,
    model: Any,
    X: np.ndarray,
    keys: tuple[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    db_url = create_database(args.pg)
    pipe = Pipeline(kind, root, db_url, args)
    try:
        ids = seed(db_url, X)
        if kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS)
            try:
                client.delete(STREAM, f"{STREAM}:dead")
            finally:
                client.close()
        pipe.start_monitor()
        pipe.start_servers(model, keys[0], keys[1], ids, X)
        body = pipe.root / "body.json"
        body.write_bytes(orjson.dumps(body_for(X, args.rows)))
        auth = f"Bearer {keys[1]}"
        # the check requests' records have arrived: the pipeline is flowing
        wait_for(lambda: pipe.stored() >= len(pipe.servers), timeout=60)

        # live: monitor consuming while the servers are driven
        before = pipe.stored()
        t0 = time.monotonic()
        live = pipe.load(body, auth, "live")
        t_load = time.monotonic() - t0
        after_load = pipe.stored()
        backlog_at_stop = pipe.backlog()
        samples = pipe.wait_drained(timeout=600)
        live_result = {
            "seconds": t_load,
            "ok": live["ok"],
            "ok_per_s": live["ok"] / live["seconds"],
            "stored_during_load": after_load - before,
            "stored_per_s_during_load": (after_load - before) / t_load,
            "backlog_at_stop": backlog_at_stop,
            "catch_up_s": samples[-1][0] - t0 - t_load - 2.0,
            "p50_ms": live["p50_ms"],
            "p99_ms": live["p99_ms"],
            "non_2xx": live["non_2xx"],
            "socket_errors": live["socket_errors"],
        }
        print(
            f"  {kind} live: {live['ok']:,} 2xx in {t_load:.1f} s "
            f"({live_result['ok_per_s']:,.0f}/s); "
            f"stored {live_result['stored_per_s_during_load']:,.0f}/s during the load; "
            f"backlog at stop {backlog_at_stop:,}"
        )

        # backlog: records pile up with the monitor stopped, then it drains them alone
        pipe.stop_monitor()
        pre = pipe.load(body, auth, "backlog")
        pipe.stop_servers()  # SIGTERM: each server flushes and seals its log
        waiting = pipe.backlog()
        stored_before = pipe.stored()
        pipe.start_monitor()
        assert pipe.monitor is not None
        t0 = time.monotonic()
        # CPU of the monitor and of every PostgreSQL process (other users' queries included)
        # while the stored count moved: the monitor's start-up (imports) is outside it.
        monitor = [pipe.monitor.pid]
        samples = pipe.wait_drained(timeout=900, cpu_pids=(lambda: monitor, postgres_pids))
        r = rate(samples)
        n, seconds, per_s = int(r["records"]), r["seconds"], r["records_per_s"]
        drain_cpu, pg_cpu = r["cpu_a"], r["cpu_b"]
        drain = {
            "records_waiting": waiting,
            "stored": pipe.stored() - stored_before,
            "records_per_s": per_s,
            "measured_records": n,
            "measured_seconds": seconds,
            "monitor_start_to_drained_s": samples[-1][0] - t0 - 2.0,
            "monitor_cpu_s": drain_cpu,
            "postgres_cpu_s": pg_cpu,
            "monitor_cpu_us_per_record": drain_cpu / n * 1e6 if n else None,
            "postgres_cpu_us_per_record": pg_cpu / n * 1e6 if n else None,
        }
        print(
            f"  {kind} backlog: {waiting:,} records waiting; the monitor stored {n:,} in "
            f"{seconds:.1f} s = {per_s:,.0f} records/s; CPU monitor {drain_cpu:.1f} s, "
            f"PostgreSQL {pg_cpu:.1f} s"
        )
        pipe.stop_monitor()
        check = pipe.check_exactly_once(live["ok_ids"] + pre["ok_ids"])
        print(
            f"  {kind} exactly once: {check['ok_with_exactly_one_record']:,} of "
            f"{check['ok_requests']:,} 2xx requests ({check['share_exactly_once']:.4%}); "
            f"missing {check['ok_missing']}, doubled {check['ok_more_than_one']}, "
            f"stored without a 2xx {check['stored_without_2xx']}"
        )
        profile = profile_drain(pipe, model, keys, ids, X, body, auth) if args.profile else None
        return {
            "stream": kind,
            "servers": args.servers,
            "live": live_result,
            "backlog": drain,
            "exactly_once": check,
            "profile": profile,
        }
    finally:
        pipe.close()
        drop_database(args.pg, db_url)


def profile_drain(
    pipe: Pipeline,
    model: Any,
    keys: tuple[str, str],
    ids: tuple[int, int],
    X: np.ndarray,
    body: Path,
    auth: str,
) -> dict[str, Any]:
    """One more backlog, drained in this process by MonitorConsumer.run_once under cProfile."""
    from konan.core.settings import Settings
    from konan.db.engine import make_engine, make_session_factory
    from konan.monitoring.consumer import MonitorConsumer
    from konan.monitoring.stream import make_log_stream

    pipe.start_servers(model, keys[0], keys[1], ids, X)
    pipe.load(body, auth, "profile")
    pipe.stop_servers()
    env = pipe.settings_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = Settings(
            data_dir=pipe.root / "profile-data",
            monitoring={"spool_dir": pipe.spool}
            | ({"ingest_batch_size": pipe.args.batch_size} if pipe.args.batch_size else {}),
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    engine = make_engine(pipe.db_url, settings)
    stream = make_log_stream(settings)
    consumer = MonitorConsumer(settings, make_session_factory(engine), stream, poll_timeout=0.2)
    profiler = cProfile.Profile()
    handled = 0
    t0 = time.perf_counter()
    try:
        profiler.enable()
        while True:
            n = consumer.run_once()
            if n == 0 and pipe.backlog() == 0:
                break
            handled += n
        profiler.disable()
    finally:
        stream.close()
        engine.dispose()
    seconds = time.perf_counter() - t0
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
    stats.print_stats(25)
    top = text.getvalue()
    print(f"  {pipe.kind} profile: {handled:,} records in {seconds:.1f} s under cProfile")
    print("\n".join(top.splitlines()[:45]))
    return {"records": handled, "seconds": seconds, "top_cumulative": top}


def print_table(results: list[dict[str, Any]], info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Prediction logging into PostgreSQL — {info['cpus']} CPUs, {info['date']}")
    cols = (
        "stream",
        "servers",
        "2xx/s (live)",
        "stored/s (live)",
        "backlog at stop",
        "consumer alone rec/s",
        "monitor CPU µs/rec",
        "PG CPU µs/rec",
        "2xx requests",
        "exactly once",
    )
    for c in cols:
        table.add_column(c, justify="left" if c == "stream" else "right")
    for r in results:
        if "not_measured" in r:
            table.add_row(r["stream"], "", "not measured", *[""] * 7)
            continue
        live, drain, check = r["live"], r["backlog"], r["exactly_once"]
        table.add_row(
            r["stream"],
            str(r["servers"]),
            f"{live['ok_per_s']:,.0f}",
            f"{live['stored_per_s_during_load']:,.0f}",
            f"{live['backlog_at_stop']:,}",
            f"{drain['records_per_s']:,.0f}",
            f"{drain['monitor_cpu_us_per_record'] or 0:,.0f}",
            f"{drain['postgres_cpu_us_per_record'] or 0:,.0f}",
            f"{check['ok_requests']:,}",
            f"{check['share_exactly_once']:.2%}",
        )
    console = Console(width=160)
    console.print(table)
    for r in results:
        if "not_measured" in r:
            console.print(f"not measured: {r['stream']}: {r['not_measured']}", markup=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--streams", default="spool,redis")
    parser.add_argument("--servers", type=int, default=2, help="model servers per stream")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per phase")
    parser.add_argument("--connections", type=int, default=16, help="per server")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (and record)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="monitor ingest batch (default: Konan's)"
    )
    parser.add_argument("--server-cpus", default="", help="taskset list for servers")
    parser.add_argument("--wrk-cpus", default="", help="taskset list for wrk")
    parser.add_argument("--pg", default=PG_ADMIN, help="PostgreSQL admin URL")
    parser.add_argument("--profile", action="store_true", help="also profile a drain (cProfile)")
    args = parser.parse_args()
    exit_on_sigterm()
    if shutil.which("wrk") is None:
        print("wrk not found (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=50_000, n_features=N_FEATURES, random_state=42)
    model = train("lr", X, y)
    root = Path(tempfile.mkdtemp(prefix="konan-bench-logging-"))
    secret = "kn_" + secrets.token_urlsafe(24)
    key_server = start_key_server(secret)
    keys_url = f"http://127.0.0.1:{key_server.server_address[1]}/keys"
    info = machine()
    results: list[dict[str, Any]] = []
    try:
        for kind in [s for s in args.streams.split(",") if s]:
            print(f"{kind}:")
            try:
                results.append(run_stream(kind, root, model, X, (keys_url, secret), args))
            except (sa.exc.OperationalError, OSError, ImportError) as exc:
                reason = str(exc).strip().splitlines()[0]
                print(f"  {kind}: not measured: {reason}")
                results.append({"stream": kind, "not_measured": reason})
    finally:
        key_server.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    print_table(results, info)
    path = write_results(
        "logging",
        {"benchmark": "logging", "machine": info, "config": vars(args), "results": results},
    )
    print(f"\nJSON: {path.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
