"""The prediction log is exactly-once through a Redis outage and a PostgreSQL outage.

The real scale-out processes — control plane, worker, `konan monitor` and the local-runtime
agent with two model servers — run against a PRIVATE PostgreSQL cluster (initdb + pg_ctl; a
fresh database on the shared server where those binaries are missing) and a PRIVATE
redis-server: the shared Redis on 6379 and the shared PostgreSQL server are never stopped.
Threads send predictions with unique `X-Request-Id`s straight to the model servers while the
broker (or the database) is stopped and started again; afterwards every request answered 2xx
has exactly one `prediction_logs` row, and no other request has one.

Redis runs with `appendonly yes` and `appendfsync always` (see the monitoring README,
"Outages"): with fsync on every write the SIGKILL variant may claim that nothing acknowledged
is lost. RDB snapshots are off, so the append-only file alone carries the stream, its consumer
group and its pending entries across the restart.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx2
import pytest
import redis
import sqlalchemy as sa

import konan
from konan.core.settings import Settings
from tests.conftest import COMPILE_ENV, PG_ADMIN_URL
from tests.e2e.test_konan_up import free_port
from tests.registry import builders

log = logging.getLogger(__name__)

PASSWORD = "outage-admin-password"
ROWS = [{"a": 0.5, "b": -1.0, "c": 0.25, "d": 2.0}]
STREAM = "konan:prediction-logs"
REDIS_SERVER = shutil.which("redis-server")
PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ---- a private redis-server ----------------------------------------------------------------


class PrivateRedis:
    """redis-server on a free port with its data in ``directory``; restartable in place."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, self.output()
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    return bool(client.ping())  # LOADING raises until the AOF is read
            except redis.RedisError:
                return False

        wait_for(answers, 15, f"redis-server on port {self.port}")

    def stop(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=15)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def redis_in(directory: Path) -> Iterator[PrivateRedis]:
    if REDIS_SERVER is None:
        pytest.skip("the redis-server binary is not installed")
    server = PrivateRedis(directory)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """The broker the Redis outage tests stop and start (one platform for both variants)."""
    with redis_in(tmp_path_factory.mktemp("redis")) as server:
        yield server


# ---- databases -------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new database on the shared PostgreSQL server, dropped afterwards."""
    name = f"konan_outage_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (initdb + pg_ctl) on a free port, run as the
    ``postgres`` system user because initdb refuses root."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="konan-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/konan"
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.root, 0o700)

    def _run(self, *args: str, timeout: float = 60) -> None:
        argv = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        assert done.returncode == 0, (argv, done.stdout.decode(), done.stderr.decode())

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "konan")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log), "-o", options)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError):
                self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))
        shutil.rmtree(self.root, ignore_errors=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def postgres_bindir() -> tuple[Path | None, str]:
    """Where initdb and pg_ctl are, or why they cannot be used here."""
    usable = [Path(b) for b in PG_BINS if (Path(b) / "initdb").exists()]
    if not usable or shutil.which("runuser") is None:
        return None, "initdb/pg_ctl (or runuser) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None, "initdb refuses root and there is no postgres user to run it as"
    return usable[-1], ""


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres | None]:
    """A private cluster, or None where the binaries are missing (the PostgreSQL test skips,
    the Redis tests use a fresh database on the shared server instead)."""
    bindir, _ = postgres_bindir()
    if bindir is None:
        yield None
        return
    cluster = PrivatePostgres(bindir)
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def platform_database(private_postgres: PrivatePostgres | None) -> Iterator[str]:
    if private_postgres is not None:
        yield private_postgres.url
        return
    with fresh_database() as url:
        yield url


# ---- the scale-out platform ------------------------------------------------------------------


class ScaleOut:
    """`konan server`, `konan worker --beat`, `konan monitor` and `konan agent` as separate
    processes, the way `konan up` starts them, in scale-out mode."""

    def __init__(self, root: Path, database_url: str, broker_url: str) -> None:
        from konan.cli.up import _prepare

        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = root / "data"
        self.database_url = database_url
        self.settings = Settings(
            mode="scale-out",
            data_dir=self.data_dir,
            admin_password=PASSWORD,
            database={"url": database_url},
            queue={"broker_url": broker_url},
            artifacts={"uri": str(root / "artifacts")},
            auth={"secret_key": uuid.uuid4().hex * 2},
            server={"host": "127.0.0.1", "port": self.port},
        )
        _prepare(self.settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
        env.update(self.settings.child_env())
        # Not about compiling: the test run's setting (tests/conftest.py), which child_env leaves
        # out (it carries no registry settings).
        env[COMPILE_ENV] = str(self.settings.registry.compile_onnx).lower()
        env["PYTHONUNBUFFERED"] = "1"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        commands = {
            "server": ["server", "--host", "127.0.0.1", "--port", str(self.port)],
            "worker": ["worker", "--beat"],
            "monitor": ["monitor"],
            "agent": ["agent"],
        }
        for name, args in commands.items():
            out = (root / f"{name}.log").open("wb")
            self._logs.append(out)
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "konan", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def output(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-4000:]

    def outputs(self) -> str:
        return "\n".join(f"==== {name}\n{self.output(name)}" for name in self.procs)

    def alive(self) -> None:
        """The processes on the log path are running. The worker is not among them: it only
        deploys, and a Celery worker on Redis may exit when the broker drops it while a task
        is in flight (kombu: "Unrecoverable error: AttributeError('NoneType' object has no
        attribute 'hostname')" on restoring unacked messages) — its supervisor restarts it."""
        for name in ("server", "monitor", "agent"):
            proc = self.procs[name]
            assert proc.poll() is None, f"{name} exited ({proc.returncode}):\n{self.outputs()}"

    def wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            self.alive()
            try:
                return httpx2.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx2.HTTPError:
                return False

        wait_for(ready, timeout, "the control plane's /healthz")

    def model_servers(self) -> dict[int, list[str]]:
        """pid -> argv of this platform's model servers."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "konan.serving" in argv and any(str(self.data_dir) in a for a in argv):
                found[int(entry.name)] = argv
        return found

    def serving_admin_ports(self) -> list[int]:
        """The admin ports of this platform's model servers (their /stats and /metrics)."""
        return [
            int(argv[argv.index("--admin-port") + 1])
            for argv in self.model_servers().values()
            if "--admin-port" in argv
        ]

    def log_counters(self) -> Counter[str]:
        """konan_log_{spooled,replayed,shed}_total summed over the model servers."""
        total: Counter[str] = Counter()
        for port in self.serving_admin_ports():
            text = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            for match in re.finditer(
                r"^konan_log_(spooled|replayed|shed)_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M
            ):
                total[match.group(1)] += int(float(match.group(2)))
        return total

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # The agent stops its model servers on a clean stop; any left over are killed.
        for pid in self.model_servers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for out in self._logs:
            out.close()


@dataclass
class Deployed:
    endpoint: str
    key: str


def deploy_churn(platform: ScaleOut, client: konan.Client, replicas: int) -> Deployed:
    frame = builders.numeric_frame()
    client.register_model(
        builders.numeric_classifier(frame), name="churn", reference_data=frame, target="y"
    )
    deployed = client.deploy(
        "churn-live", model="churn", version=1, replicas=(replicas, replicas), wait=60
    )
    assert deployed["status"] == "ready", deployed
    key = client.create_api_key("load", deployments=["churn-live"])["key"]
    endpoint = f"{deployed['endpoint_url']}/predict"

    def every_replica_has_the_key() -> bool:
        ports = platform.serving_admin_ports()
        stats = [httpx2.get(f"http://127.0.0.1:{p}/stats", timeout=5).json() for p in ports]
        return len(stats) == replicas and all(s["ready"] and s["keys"]["count"] >= 1 for s in stats)

    # A new key reaches each model server at its next key refresh (every 2 s).
    wait_for(every_replica_has_the_key, 10, "the new key to reach every model server")
    return Deployed(endpoint, key)


class Load:
    """Threads sending predictions with unique X-Request-Ids; every answer is recorded."""

    def __init__(self, endpoint: str, key: str, threads: int = 3) -> None:
        self.endpoint = endpoint
        self.headers = {"Authorization": f"Bearer {key}"}
        self.run = uuid.uuid4().hex[:8]
        self.answers: dict[str, int] = {}  # request id -> status (0: no answer)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(n,), daemon=True) for n in range(threads)
        ]

    def _loop(self, n: int) -> None:
        i = 0
        with httpx2.Client(timeout=10) as http:
            while not self._stop.is_set():
                i += 1
                request_id = f"{self.run}-{n}-{i}"
                try:
                    response = http.post(
                        self.endpoint,
                        json={"inputs": ROWS},
                        headers={**self.headers, "X-Request-Id": request_id},
                    )
                except httpx2.HTTPError as exc:
                    with self._lock:
                        self.answers[request_id] = 0
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    self.answers[request_id] = response.status_code
                if response.status_code == 200:
                    if response.json().get("request_id") != request_id:
                        with self._lock:
                            self.errors.append(f"wrong request id: {response.text[:200]}")
                else:
                    with self._lock:
                        self.errors.append(f"{response.status_code}: {response.text[:200]}")
                    if response.status_code == 503:
                        time.sleep(0.05)  # what Retry-After asks for, shortened

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def answered_2xx(self) -> set[str]:
        return {rid for rid, status in self.answers.items() if 200 <= status < 300}


def logged(database_url: str, run: str) -> Counter[tuple[str, str]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT request_id, role, count(*) FROM prediction_logs "
                    "WHERE request_id LIKE :prefix GROUP BY request_id, role"
                ),
                {"prefix": f"{run}-%"},
            ).all()
    finally:
        engine.dispose()
    return Counter({(r[0], r[1]): int(r[2]) for r in rows})


def assert_exactly_once(platform: ScaleOut, load: Load) -> None:
    """Drain, then: one row per 2xx answer, none for anything else."""
    answered = load.answered_2xx()
    statuses = Counter(load.answers.values())
    assert set(statuses) <= {200, 503}, (statuses, load.errors[:5])

    with redis.Redis.from_url(platform.settings.queue.broker_url or "", socket_timeout=5) as r:

        def drained() -> bool:
            platform.alive()
            counters = platform.log_counters()
            if counters["replayed"] < counters["spooled"]:
                return False  # a model server still holds spooled records
            if int(r.xlen(STREAM)) > 0:
                return False
            return len(logged(platform.database_url, load.run)) >= len(answered)

        wait_for(drained, 45, "the spool to replay and the monitor to drain the stream")
        assert int(r.xlen(f"{STREAM}:dead")) == 0, r.xrange(f"{STREAM}:dead", count=3)
        pending = r.xpending(STREAM, "monitor")
        assert pending["pending"] == 0, pending

    rows = logged(platform.database_url, load.run)
    doubled = {key: n for key, n in rows.items() if n != 1}
    assert not doubled, doubled  # the unique index makes this impossible; checked anyway
    assert {role for _, role in rows} == {"champion"}
    stored = {rid for rid, _ in rows}
    assert stored - answered == set(), sorted(stored - answered)[:5]  # no row without a 2xx
    assert answered - stored == set(), sorted(answered - stored)[:5]  # no 2xx without a row
    assert len(rows) == len(answered)


@contextlib.contextmanager
def scale_out(root: Path, database_url: str, broker_url: str) -> Iterator[ScaleOut]:
    quiet = logging.getLogger("httpx2")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one line per request otherwise
    platform: ScaleOut | None = None
    try:
        platform = ScaleOut(root, database_url, broker_url)
        yield platform
    finally:
        if platform is not None:
            platform.stop()
        quiet.setLevel(level)


@dataclass
class Serving:
    platform: ScaleOut
    deployed: Deployed


def serve_churn(platform: ScaleOut, replicas: int) -> Serving:
    began = time.monotonic()
    platform.wait_ready(60)
    log.info("%.1fs: control plane up", time.monotonic() - began)
    with konan.Client(platform.url) as client:
        client.login("admin", PASSWORD)
        deployed = deploy_churn(platform, client, replicas)
    log.info("%.1fs: deployed", time.monotonic() - began)
    return Serving(platform, deployed)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, private_redis: PrivateRedis, platform_database: str
) -> Iterator[Serving]:
    """One scale-out platform with two model servers, shared by the outage tests (starting it
    takes most of a minute on two busy cores; each outage then takes about ten seconds)."""
    root = tmp_path_factory.mktemp("platform")
    with scale_out(root, platform_database, private_redis.url) as platform:
        yield serve_churn(platform, replicas=2)


# ---- the tests -------------------------------------------------------------------------------


def traffic_through_an_outage(
    serving: Serving,
    stop: Callable[[], None],
    start: Callable[[], None],
    while_down: Callable[[], bool],
) -> Load:
    """Send traffic, ``stop`` a dependency, keep sending for at least 4 s (and until
    ``while_down`` holds), ``start`` it again, send 200 more requests, stop the traffic, and
    check that every request answered 2xx was logged exactly once."""
    began = time.monotonic()
    platform = serving.platform
    load = Load(serving.deployed.endpoint, serving.deployed.key).start()
    try:
        wait_for(lambda: load.count() >= 100, 30, "traffic before the outage")
        stop()
        down_at, mark = time.monotonic(), load.count()
        log.info("%.1fs: stopped", time.monotonic() - began)
        wait_for(
            lambda: time.monotonic() - down_at >= 4 and load.count() - mark >= 200 and while_down(),
            30,
            "traffic to be answered during the outage",
        )
        log.info(
            "%.1fs: %d requests during the outage", time.monotonic() - began, load.count() - mark
        )
        start()
        log.info("%.1fs: restarted", time.monotonic() - began)
        mark = load.count()
        wait_for(lambda: load.count() - mark >= 200, 30, "traffic after the restart")
    finally:
        load.stop()
    log.info("%.1fs: traffic stopped, %d requests", time.monotonic() - began, load.count())
    assert_exactly_once(platform, load)
    log.info("%.1fs: drained; %s", time.monotonic() - began, platform.log_counters())
    assert len(load.answered_2xx()) > 400
    return load


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_every_answered_request_is_logged_once_through_a_redis_restart(
    how: signal.Signals, private_redis: PrivateRedis, stack: Serving
) -> None:
    platform = stack.platform
    before = platform.log_counters()

    def stop() -> None:
        private_redis.stop(how)

    def spooling() -> bool:
        return platform.log_counters()["spooled"] > before["spooled"]

    traffic_through_an_outage(stack, stop, private_redis.start, spooling)
    # The model servers really spooled while Redis was gone, replayed every spooled record
    # once it was back, and refused none (no 503).
    counters = platform.log_counters()
    assert counters["spooled"] > before["spooled"], counters
    assert counters["replayed"] == counters["spooled"], counters
    assert counters["shed"] == 0, counters


def test_every_answered_request_is_logged_once_through_a_postgres_restart(
    private_postgres: PrivatePostgres | None, private_redis: PrivateRedis, stack: Serving
) -> None:
    if private_postgres is None:
        pytest.skip(postgres_bindir()[1])
    platform = stack.platform
    before = platform.log_counters()
    with private_redis.client() as r:

        def waiting_in_the_stream() -> bool:
            # Served with the cached key set; the records wait in the stream.
            return int(r.xlen(STREAM)) > 0

        traffic_through_an_outage(
            stack, private_postgres.stop, private_postgres.start, waiting_in_the_stream
        )
    counters = platform.log_counters()
    assert counters["spooled"] == before["spooled"], counters  # Redis was up: nothing spooled
    assert counters["shed"] == 0, counters
