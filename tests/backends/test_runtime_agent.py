"""The local agent: supervision beyond the Runtime contract — crash loops and back-off, health,
autoscaling, graceful stops, rolling replacement, and surviving its own restart.

Replicas are the test double of the model server's process interface (model_server_double.py),
whose knobs make it crash, hang, fail to load or ignore SIGTERM on demand; one test also runs
the real server when it exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from konan.backends.runtimes.agent import (
    TCP_MIGRATE_REQ,
    Agent,
    autoscale,
    enable_tcp_migrate_req,
    replica_env,
    run_agent,
)
from konan.backends.runtimes.base import Phase, Reason, RuntimeStatus
from konan.backends.runtimes.layout import DeploymentFiles, read_json, write_json_atomic
from konan.backends.runtimes.local import LocalProcessRuntime
from konan.backends.runtimes.processes import identify, is_running
from konan.core.settings import Settings
from konan.db import migrate
from konan.db.engine import make_engine
from tests.backends.runtime_harness import (
    AGENT_PROCESS,
    DOUBLE_COMMAND,
    FAST,
    REAL_SERVER,
    AgentThread,
    RealServing,
    kill_everything_under,
    make_desired,
    request,
    serving_processes,
    wait_for,
)

NAME = "churn-live"
HOST = "127.0.0.1"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "serving"
    try:
        yield path
    finally:
        leftovers = kill_everything_under(path)
        assert not leftovers, f"processes outlived the test: {leftovers}"


@pytest.fixture
def runtime(root: Path) -> LocalProcessRuntime:
    return LocalProcessRuntime(root, HOST, remove_timeout=20)


@pytest.fixture
def start_agent(root: Path) -> Iterator[Callable[..., AgentThread]]:
    started: list[AgentThread] = []

    def start(**options: Any) -> AgentThread:
        tuning = dataclasses.replace(FAST, **options.pop("tuning", {}))
        agent = Agent(root, HOST, server_command=DOUBLE_COMMAND, tuning=tuning, **options)
        thread = AgentThread(agent).start()
        started.append(thread)
        return thread

    yield start
    for thread in reversed(started):
        thread.stop()


def status_where(
    runtime: LocalProcessRuntime,
    check: Callable[[RuntimeStatus], bool],
    what: str,
    timeout: float = 20.0,
) -> RuntimeStatus:
    def probe() -> RuntimeStatus | None:
        status = runtime.status(NAME)
        return status if check(status) else None

    return wait_for(probe, timeout, what)


def ready(runtime: LocalProcessRuntime, replicas: int = 1) -> RuntimeStatus:
    return status_where(
        runtime,
        lambda s: s.phase == Phase.ready and s.ready_replicas == replicas,
        f"{replicas} ready replica(s)",
    )


def pids(root: Path) -> set[int]:
    return {p.pid for p in serving_processes(root, NAME)}


def log_text(root: Path) -> str:
    files = DeploymentFiles(root, NAME)
    return "".join(files.log_file(s).read_text() for s in files.slots("log"))


# ---- the autoscaling rule ----------------------------------------------------------------------


def scale(current: int, load: float, calm_since: float | None = None, **bounds: int) -> Any:
    return autoscale(
        current=current,
        load=load,
        replicas_min=bounds.get("replicas_min", 1),
        replicas_max=bounds.get("replicas_max", 4),
        target_in_flight=8.0,
        calm_since=calm_since,
        now=1000.0,
        scale_down_after=60.0,
    )


def test_autoscaling_scales_up_at_once_to_in_flight_over_target() -> None:
    assert scale(1, load=17) == (3, None)  # ceil(17 / 8)
    assert scale(1, load=500) == (4, None)  # never above max
    assert scale(2, load=16) == (2, None)  # exactly on target: steady


def test_autoscaling_scales_down_one_step_per_calm_period_never_below_min() -> None:
    assert scale(3, load=0) == (3, 1000.0)  # calm starts now
    assert scale(3, load=0, calm_since=941.0) == (3, 941.0)  # 59 s: not yet
    assert scale(3, load=0, calm_since=940.0) == (2, 1000.0)  # 60 s: one step, calm restarts
    assert scale(1, load=0, calm_since=0.0) == (1, None)  # at min
    assert scale(3, load=9, calm_since=940.0) == (2, 1000.0)  # wants 2: one step down
    assert scale(3, load=20, calm_since=940.0) == (3, None)  # busy again: calm resets


def test_autoscaling_follows_changed_bounds_at_once() -> None:
    assert scale(1, load=0, replicas_min=3, replicas_max=5) == (3, None)
    assert scale(4, load=100, replicas_min=1, replicas_max=2) == (2, None)
    assert scale(2, load=100, replicas_min=0, replicas_max=4) == (0, None)  # min 0 = stopped


def test_autoscaling_adds_replicas_for_in_flight_load_and_removes_them_when_calm(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    start_agent(target_in_flight=2.0, tuning={"scale_down_after": 1.0})
    runtime.apply(make_desired(NAME, replicas_min=1, replicas_max=3))
    status = ready(runtime, 1)
    assert status.endpoint_url is not None
    endpoint = status.endpoint_url
    release = threading.Event()

    def slow_request() -> int:
        response = request(
            endpoint + "/predict", "POST", {"inputs": [{}]}, {"X-Test-Sleep": "4"}, timeout=30
        )
        release.wait(30)
        return response.status if response else 0

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(slow_request) for _ in range(5)]
        # 5 in flight / 2 per replica → 3 replicas, quickly.
        up = status_where(runtime, lambda s: s.ready_replicas == 3, "scale up to 3", 5.0)
        assert up.desired_replicas == 3
        release.set()
        assert [f.result() for f in futures] == [200] * 5
    # Calm again: back to the minimum, one replica per calm period.
    down = status_where(runtime, lambda s: s.desired_replicas == 1, "scale down to 1", 15.0)
    wait_for(lambda: len(pids(root)) == 1, 10.0, "one replica process")
    assert down.phase in (Phase.ready, Phase.degraded)


# ---- failures ---------------------------------------------------------------------------------


def test_a_crash_looping_replica_backs_off_and_reports_crash_loop(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    start_agent(tuning={"backoff_initial": 0.5, "backoff_max": 2.0})
    runtime.apply(make_desired(NAME, env={"KONAN_TEST_DOUBLE_EXIT_CODE": "3"}))
    failed = status_where(
        runtime,
        lambda s: s.phase == Phase.failed and s.reason == Reason.crash_loop,
        "crash_loop",
    )
    assert "exited with code 3" in failed.message
    # The first restart is immediate, then the delay doubles up to the maximum.
    wait_for(lambda: "restarting in 2.0s" in log_text(root), 15.0, "back-off to reach 2 s")
    delays = [
        line.split("restarting in ")[1].split("s ")[0] if "restarting in" in line else "0"
        for line in log_text(root).splitlines()
        if "exited with code 3" in line
    ]
    assert [float(d) for d in delays[:4]] == [0.0, 0.5, 1.0, 2.0]

    # A fixed deployment starts at once and the crash loop is forgotten.
    runtime.apply(make_desired(NAME))
    healthy = ready(runtime)
    assert healthy.reason is None


@pytest.mark.parametrize("failure", [Reason.load_error, Reason.artifact_missing])
def test_a_replica_that_cannot_load_reports_why(
    failure: Reason, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    start_agent()
    runtime.apply(make_desired(NAME, env={"KONAN_TEST_DOUBLE_FAIL": failure.value}))
    status = status_where(runtime, lambda s: s.reason == failure, f"reason {failure}")
    assert status.phase == Phase.failed
    assert status.ready_replicas == 0


@pytest.mark.skipif(not REAL_SERVER, reason="konan/serving/__main__.py does not exist yet")
def test_the_real_server_missing_its_artifact_reports_artifact_missing(
    tmp_path: Path, root: Path, runtime: LocalProcessRuntime
) -> None:
    serving = RealServing(tmp_path / "real")
    desired = serving.desired(NAME)
    spec = desired.spec.model_copy(
        update={"versions": [desired.spec.versions[0].model_copy(update={"sha256": "f" * 64})]}
    )
    agent = AgentThread(Agent(root, HOST, tuning=FAST)).start()
    try:
        runtime.apply(dataclasses.replace(desired, spec=spec))
        status = status_where(
            runtime, lambda s: s.reason == Reason.artifact_missing, "artifact_missing", 30.0
        )
        assert status.phase == Phase.failed
        assert "artifact" in status.message
    finally:
        agent.stop()
        serving.close()


def test_a_replica_that_stops_answering_is_killed_and_replaced(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    start_agent(tuning={"liveness_timeout": 1.0})
    runtime.apply(make_desired(NAME, env={"KONAN_TEST_DOUBLE_HANG_AFTER": "1.5"}))
    first = wait_for(lambda: pids(root), 10.0, "a replica")
    wait_for(lambda: pids(root) and not pids(root) & first, 15.0, "a replacement process")
    # The replacement may start before the hung process has been reaped; the reason is written
    # when it is, so wait for it rather than read the log at once.
    wait_for(
        lambda: "stopped answering its health checks" in log_text(root),
        10.0,
        "the reason in the replica log",
    )


# ---- stopping ---------------------------------------------------------------------------------


def test_remove_waits_for_in_flight_requests(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    start_agent()
    runtime.apply(make_desired(NAME))
    status = ready(runtime)
    assert status.endpoint_url is not None
    endpoint = status.endpoint_url
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            request, endpoint + "/predict", "POST", {"inputs": [{}]}, {"X-Test-Sleep": "1.5"}, 10
        )

        def in_flight() -> bool:
            observed = read_json(DeploymentFiles(root, NAME).status) or {}
            return any(r.get("in_flight") for r in observed.get("replicas", []))

        wait_for(in_flight, 5.0, "the request to be in flight")
        runtime.remove(NAME)
        response = pending.result()
    assert response is not None
    assert response.status == 200  # SIGTERM drained it instead of cutting it off
    assert pids(root) == set()


def test_a_replica_ignoring_sigterm_is_killed_after_the_grace_period(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    start_agent(tuning={"stop_grace": 1.0})
    runtime.apply(make_desired(NAME, env={"KONAN_TEST_DOUBLE_IGNORE_TERM": "1"}))
    ready(runtime)
    started = time.monotonic()
    runtime.remove(NAME)
    took = time.monotonic() - started
    assert pids(root) == set()
    assert 1.0 <= took < 10.0


def test_the_agent_stops_every_replica_when_it_stops(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    agent = start_agent()
    runtime.apply(make_desired(NAME, replicas_min=2))
    ready(runtime, 2)
    agent.stop()
    assert pids(root) == set()
    stopped = runtime.status(NAME)
    assert stopped.phase == Phase.pending
    assert stopped.reason == Reason.runtime_unavailable


def test_new_env_replaces_replicas_one_by_one_without_failed_requests(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    start_agent()
    runtime.apply(make_desired(NAME, replicas_min=2))
    status = ready(runtime, 2)
    assert status.endpoint_url is not None
    endpoint = status.endpoint_url
    old = pids(root)
    stop = threading.Event()
    outcomes: list[int] = []

    def traffic() -> None:
        while not stop.is_set():
            response = request(endpoint + "/predict", "POST", {"inputs": [{}]})
            outcomes.append(response.status if response else 0)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        runtime.apply(make_desired(NAME, replicas_min=2, env={"KONAN_SERVING_TOKEN": "rotated"}))
        wait_for(lambda: len(pids(root)) == 2 and not pids(root) & old, 20.0, "two new replicas")
        ready(runtime, 2)
    finally:
        stop.set()
        sender.join()
    assert len(outcomes) > 50
    assert outcomes.count(200) == len(outcomes), f"failed: {[o for o in outcomes if o != 200]}"


# ---- surviving its own restart ------------------------------------------------------------------


def _agent_process(root: Path) -> subprocess.Popen[bytes]:
    tuning = json.dumps(dataclasses.asdict(FAST))
    return subprocess.Popen(
        [sys.executable, str(AGENT_PROCESS), str(root), HOST, tuning, json.dumps(DOUBLE_COMMAND)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_restarted_agent_adopts_the_running_replicas(
    root: Path, runtime: LocalProcessRuntime
) -> None:
    first = _agent_process(root)
    second: subprocess.Popen[bytes] | None = None
    try:
        runtime.apply(make_desired(NAME, replicas_min=2))
        ready(runtime, 2)
        replicas = pids(root)
        first.kill()  # a crash: no chance to stop anything
        first.wait()
        assert pids(root) == replicas  # the replicas live on and keep serving

        second = _agent_process(root)
        agent_pid = second.pid

        def adopted() -> bool:
            observed = read_json(DeploymentFiles(root, NAME).status) or {}
            return observed.get("agent_pid") == agent_pid and observed.get("phase") == "ready"

        wait_for(adopted, 15.0, "the new agent to report the deployment ready")
        assert pids(root) == replicas  # adopted, not restarted, no duplicates

        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        assert pids(root) == set()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_recorded_pid_now_owned_by_another_process_is_left_alone(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    runtime.apply(make_desired(NAME))
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        ident = wait_for(
            lambda: (found := identify(bystander.pid)) and found.argv and found, 5.0, "bystander"
        )
        files = DeploymentFiles(root, NAME)
        # Slot 0: the PID now runs something else. Slot 1: same PID, but not the recorded start.
        write_json_atomic(files.pid_file(0), {"identity": ident.to_json(), "admin_port": 1})
        forged = {
            **ident.to_json(),
            "start_ticks": ident.start_ticks + 1,
            "argv": [*DOUBLE_COMMAND],
        }
        write_json_atomic(files.pid_file(1), {"identity": forged, "admin_port": 2})
        start_agent()
        ready(runtime)
        assert bystander.poll() is None
        assert is_running(ident)
        assert files.slots("pid") == [0]
        assert read_json(files.pid_file(0))["identity"]["pid"] != bystander.pid
    finally:
        bystander.kill()
        bystander.wait()


def test_a_model_server_without_a_pid_file_is_stopped_on_start(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    runtime.apply(make_desired(NAME))
    files = DeploymentFiles(root, NAME)
    port = int(files.port.read_text())
    output = root.parent / "orphan.log"
    with output.open("wb") as out:
        orphan = subprocess.Popen(
            [
                *DOUBLE_COMMAND,
                *("--spec", str(files.spec), "--host", HOST, "--port", str(port)),
                *("--reuse-port", "--admin-port", "0"),
            ],
            stderr=out,
        )
    try:
        wait_for(lambda: "listening" in output.read_text(), 10.0, "the orphan to serve")
        start_agent()
        assert orphan.wait(15) == 0  # SIGTERM: it drained and exited
        ready(runtime)
        assert orphan.pid not in pids(root)
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_a_second_agent_on_the_same_root_waits_for_the_first(
    root: Path, runtime: LocalProcessRuntime, start_agent: Callable[..., AgentThread]
) -> None:
    first = start_agent()
    runtime.apply(make_desired(NAME))
    ready(runtime)
    replicas = pids(root)
    second = start_agent()
    wait_for(lambda: second.thread.is_alive(), 1.0, "the second agent to run")
    assert pids(root) == replicas  # only the first supervises
    first.stop()
    wait_for(lambda: pids(root) and not pids(root) & replicas, 10.0, "the second agent's replica")
    ready(runtime)


# ---- the process around the loop -----------------------------------------------------------------


def test_run_agent_beats_its_heartbeat_and_forgets_it_on_stop(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)

    def rows() -> list[Any]:
        with engine.connect() as conn:
            return list(
                conn.execute(sa.text("SELECT instance FROM heartbeats WHERE component = 'agent'"))
            )

    stop = threading.Event()
    thread = threading.Thread(target=run_agent, args=(settings, stop))
    thread.start()
    try:
        beats = wait_for(rows, 15.0, "an agent heartbeat")
        assert str(os.getpid()) in beats[0][0]
        assert settings.serving_root.is_dir()
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert rows() == []
    engine.dispose()


def test_the_agent_turns_on_connection_migration_between_listeners() -> None:
    if not TCP_MIGRATE_REQ.exists():
        pytest.skip("this kernel has no net.ipv4.tcp_migrate_req (Linux < 5.14)")
    enabled = enable_tcp_migrate_req()
    assert enabled == (TCP_MIGRATE_REQ.read_text().strip() == "1")
    if os.geteuid() == 0:
        assert enabled


@pytest.mark.parametrize("server", ["double", "real"])
def test_both_servers_accept_the_command_line_the_agent_passes(server: str) -> None:
    if server == "real" and not REAL_SERVER:
        pytest.skip("konan/serving/__main__.py does not exist yet")
    command = DOUBLE_COMMAND if server == "double" else Agent(Path("/unused")).server_command
    usage = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for flag in ("--spec", "--host", "--port", "--reuse-port", "--admin-port"):
        assert flag in usage


def test_replicas_get_the_control_planes_settings_not_the_agents() -> None:
    inherited = {
        "PATH": "/usr/bin",
        "KONAN_DATABASE__URL": "postgresql://konan:secret@db/konan",
        "KONAN_ADMIN_PASSWORD": "hunter2",
        "KONAN_DATA_DIR": "/var/lib/agent",
    }
    env = replica_env(inherited, {"KONAN_DATA_DIR": "/var/lib/konan", "KONAN_SERVING_TOKEN": "t"})
    assert env == {
        "PATH": "/usr/bin",
        "KONAN_DATA_DIR": "/var/lib/konan",
        "KONAN_SERVING_TOKEN": "t",
        "PYTHONUNBUFFERED": "1",
    }
