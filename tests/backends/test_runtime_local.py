"""LocalProcessRuntime on its own (no agent): the folder it writes, its checks, its fallbacks,
and the factory that picks a runtime from settings."""

from __future__ import annotations

import fcntl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from konan.backends.runtimes.base import Phase, Reason
from konan.backends.runtimes.factory import runtime_from_settings
from konan.backends.runtimes.layout import DeploymentFiles, read_json, write_json_atomic
from konan.backends.runtimes.local import LocalProcessRuntime
from konan.backends.runtimes.ports import candidate_range
from konan.backends.runtimes.processes import identify
from konan.core.errors import ConfigError, InvalidInput
from konan.core.settings import Settings
from konan.serving.spec import ServingSpec
from tests.backends.runtime_harness import (
    DOUBLE_COMMAND,
    kill_everything_under,
    make_desired,
    serving_processes,
    wait_for,
)

NAME = "churn-live"


@pytest.fixture
def runtime(tmp_path: Path) -> LocalProcessRuntime:
    return LocalProcessRuntime(tmp_path / "serving", "127.0.0.1", remove_timeout=5)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_apply_writes_the_deployment_folder(runtime: LocalProcessRuntime) -> None:
    desired = make_desired(NAME, revision=3, replicas_min=2, replicas_max=5)
    runtime.apply(desired)
    files = DeploymentFiles(runtime.root, NAME)
    assert mode(files.dir) == 0o700
    assert ServingSpec.read(files.spec) == desired.spec
    assert read_json(files.desired) == {
        "replicas_min": 2,
        "replicas_max": 5,
        "host": "127.0.0.1",
        "removed": False,
        "generation": 1,
    }
    assert mode(files.desired) == 0o600
    assert read_json(files.env) == {"KONAN_SERVING_TOKEN": "test-serving-token"}
    assert mode(files.env) == 0o600  # it holds the serving token
    assert int(files.port.read_text()) in candidate_range()
    assert not list(files.dir.glob("*.tmp"))


def test_apply_twice_touches_nothing_and_a_change_bumps_the_generation(
    runtime: LocalProcessRuntime,
) -> None:
    runtime.apply(make_desired(NAME))
    files = DeploymentFiles(runtime.root, NAME)
    paths = (files.spec, files.desired, files.env, files.port)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in paths}
    runtime.apply(make_desired(NAME))
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in paths} == before

    runtime.apply(make_desired(NAME, revision=2))
    assert read_json(files.desired)["generation"] == 2
    assert ServingSpec.read(files.spec).revision == 2
    runtime.apply(make_desired(NAME, revision=2, replicas_min=2, replicas_max=2))
    assert read_json(files.desired)["generation"] == 3


def test_each_deployment_keeps_its_own_port(runtime: LocalProcessRuntime) -> None:
    runtime.apply(make_desired("a"))
    runtime.apply(make_desired("b"))
    port_a = DeploymentFiles(runtime.root, "a").port.read_text()
    port_b = DeploymentFiles(runtime.root, "b").port.read_text()
    assert port_a != port_b
    runtime.apply(make_desired("a", revision=2, replicas_min=3, replicas_max=3))
    assert DeploymentFiles(runtime.root, "a").port.read_text() == port_a
    assert runtime.status("a").endpoint_url == f"http://127.0.0.1:{int(port_a)}"


@pytest.mark.parametrize("name", ["../escape", "Churn", "", ".hidden", "a/b", "x" * 64])
def test_unsafe_names_are_rejected_before_anything_is_written(
    runtime: LocalProcessRuntime, name: str
) -> None:
    with pytest.raises(InvalidInput):
        runtime.apply(make_desired(name))
    with pytest.raises(InvalidInput):
        runtime.status(name)
    with pytest.raises(InvalidInput):
        runtime.remove(name)
    assert not runtime.root.exists() or not any(runtime.root.iterdir())


def test_impossible_replica_bounds_are_rejected(runtime: LocalProcessRuntime) -> None:
    with pytest.raises(InvalidInput, match="min <= max"):
        runtime.apply(make_desired(NAME, replicas_min=3, replicas_max=2))
    assert runtime.status(NAME).phase == Phase.absent


def test_status_without_an_agent_says_so(runtime: LocalProcessRuntime) -> None:
    assert runtime.status(NAME).phase == Phase.absent
    runtime.apply(make_desired(NAME))
    status = runtime.status(NAME)
    assert status.phase == Phase.pending
    assert status.reason == Reason.runtime_unavailable
    assert "konan agent" in status.message
    assert status.endpoint_url is not None


def test_a_stale_report_of_a_dead_agent_is_not_trusted(runtime: LocalProcessRuntime) -> None:
    runtime.apply(make_desired(NAME))
    files = DeploymentFiles(runtime.root, NAME)
    write_json_atomic(
        files.status,
        {
            "phase": "ready",
            "ready_replicas": 1,
            "desired_replicas": 1,
            "serving_revision": 1,
            "observed_generation": 1,
            "updated_at": 0,
        },
    )
    status = runtime.status(NAME)
    assert status.reason == Reason.runtime_unavailable
    assert status.phase == Phase.degraded  # it may still serve, nobody watches it


def test_a_report_older_than_the_last_apply_is_not_ready(runtime: LocalProcessRuntime) -> None:
    runtime.apply(make_desired(NAME))
    files = DeploymentFiles(runtime.root, NAME)
    report = {
        "phase": "ready",
        "ready_replicas": 1,
        "desired_replicas": 1,
        "serving_revision": 1,
        "observed_generation": 1,
        "updated_at": time.time(),
    }
    write_json_atomic(files.status, report)
    lock = (runtime.root / ".agent.lock").open("w")  # pretend an agent holds the root
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        assert runtime.status(NAME).phase == Phase.ready
        runtime.apply(make_desired(NAME, revision=2))
        assert runtime.status(NAME).phase == Phase.starting
    finally:
        lock.close()


def test_logs_are_the_tail_of_every_replica(runtime: LocalProcessRuntime) -> None:
    runtime.apply(make_desired(NAME))
    files = DeploymentFiles(runtime.root, NAME)
    files.log_file(0).write_text("".join(f"zero {i}\n" for i in range(1000)))
    files.log_file(1).write_text("one 0\none 1\n")
    assert runtime.logs(NAME, tail=4) == [
        "replica-0 | zero 998",
        "replica-0 | zero 999",
        "replica-1 | one 0",
        "replica-1 | one 1",
    ]
    assert len(runtime.logs(NAME, tail=200)) == 200
    assert runtime.logs(NAME, tail=0) == []
    assert runtime.logs("other") == []


def test_remove_without_an_agent_stops_the_recorded_replicas_itself(
    runtime: LocalProcessRuntime,
) -> None:
    runtime.apply(make_desired(NAME))
    files = DeploymentFiles(runtime.root, NAME)
    port = files.port.read_text().strip()
    log = files.log_file(0).open("wb")
    replica = subprocess.Popen(
        [
            *DOUBLE_COMMAND,
            *("--spec", str(files.spec), "--host", "127.0.0.1", "--port", port),
            *("--reuse-port", "--admin-port", "0"),
        ],
        stderr=log,
    )
    log.close()
    try:
        ident = wait_for(
            lambda: (found := identify(replica.pid)) and found.argv and found, 5.0, "replica"
        )
        write_json_atomic(files.pid_file(0), {"identity": ident.to_json(), "admin_port": 0})
        wait_for(lambda: "listening" in files.log_file(0).read_text(), 10.0, "it to serve")
        runtime.remove(NAME)
        assert replica.wait(10) == 0  # SIGTERM, drained
        assert not files.dir.exists()
        assert runtime.status(NAME).phase == Phase.absent
    finally:
        if replica.poll() is None:
            replica.kill()
            replica.wait()
        kill_everything_under(runtime.root)
    assert serving_processes(runtime.root) == []


def test_factory_builds_the_runtime_the_settings_name(tmp_path: Path) -> None:
    local = runtime_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalProcessRuntime)
    assert local.root == (tmp_path / "serving").resolve()
    assert local.kind == "local"
    wildcard = "0.0.0.0"  # noqa: S104 - a setting under test, nothing binds here
    runtime = {"local_root": tmp_path / "elsewhere", "local_host": wildcard}
    custom = runtime_from_settings(Settings(data_dir=tmp_path, runtime=runtime))
    assert isinstance(custom, LocalProcessRuntime)
    assert custom.root == tmp_path / "elsewhere"
    assert custom.host == wildcard
    assert custom.status("x").phase == Phase.absent
    for kind in ("docker", "kubernetes"):
        chosen = runtime_from_settings(Settings(data_dir=tmp_path, runtime={"kind": kind}))
        assert chosen.kind == kind


def test_the_local_runtime_never_imports_the_docker_or_kubernetes_sdks(tmp_path: Path) -> None:
    code = (
        "import sys; from konan.core.settings import Settings; "
        "from konan.backends.runtimes.factory import runtime_from_settings; "
        f"runtime_from_settings(Settings(data_dir={str(tmp_path)!r})); "
        "print(sorted(m for m in ('docker', 'kubernetes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_factory_rejects_an_unknown_kind(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    object.__setattr__(settings.runtime, "kind", "nomad")
    with pytest.raises(ConfigError, match="KONAN_RUNTIME__KIND"):
        runtime_from_settings(settings)
