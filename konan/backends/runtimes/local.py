"""LocalProcessRuntime: model servers as local processes (the embedded default).

This side only writes files (see ``layout.py``); the agent (``konan agent``, started by
``konan up``) runs the processes and reports back in ``status.json``. So ``apply`` returns at
once and the caller polls ``status`` — the same contract as Docker and Kubernetes.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from konan.backends.runtimes.base import DesiredDeployment, Phase, Reason, Runtime, RuntimeStatus
from konan.backends.runtimes.layout import (
    PORTS_LOCK,
    DeploymentFiles,
    agent_running,
    check_name,
    deployment_names,
    file_lock,
    make_private_dir,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
)
from konan.backends.runtimes.ports import allocate_port
from konan.backends.runtimes.processes import (
    ProcessIdentity,
    find_processes,
    is_running,
    signal_process,
)
from konan.core.errors import InvalidInput


class LocalProcessRuntime(Runtime):
    """Deployments as folders under ``root``; replicas serve on ``http://host:<port>``.

    ``remove_timeout`` bounds how long ``remove`` waits for the agent to stop the replicas
    before it stops them itself; ``stale_after`` is how old ``status.json`` may be before the
    status says the agent is not running.
    """

    kind = "local"

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        *,
        remove_timeout: float = 45.0,
        stale_after: float = 10.0,
    ) -> None:
        self.root = Path(root).absolute()
        self.host = host
        self.remove_timeout = remove_timeout
        self.stale_after = stale_after

    def __repr__(self) -> str:
        return f"LocalProcessRuntime(root={str(self.root)!r}, host={self.host!r})"

    # ---- Runtime ----------------------------------------------------------------------------

    def apply(self, desired: DesiredDeployment) -> None:
        files = DeploymentFiles(self.root, check_name(desired.name))
        if desired.replicas_min < 0 or desired.replicas_max < desired.replicas_min:
            raise InvalidInput(
                f"replicas must satisfy 0 <= min <= max, got min={desired.replicas_min} "
                f"max={desired.replicas_max}"
            )
        make_private_dir(self.root)
        make_private_dir(files.dir)
        self._ensure_port(files)

        changed = False
        spec_json = desired.spec.model_dump_json(indent=2)
        if _read_text(files.spec) != spec_json:
            desired.spec.write(files.spec)  # atomic; the replicas pick it up themselves
            changed = True
        env = {str(k): str(v) for k, v in desired.env.items()}
        if read_json(files.env) != env:
            write_json_atomic(files.env, env, mode=0o600)
            changed = True
        wanted = {
            "replicas_min": desired.replicas_min,
            "replicas_max": desired.replicas_max,
            "host": self.host,
            "removed": False,
        }
        previous = read_json(files.desired)
        previous = previous if isinstance(previous, dict) else {}
        generation = int(previous.get("generation", 0))
        if changed or {k: previous.get(k) for k in wanted} != wanted:
            # Written last: the agent acts on a folder only once desired.json is there.
            write_json_atomic(files.desired, {**wanted, "generation": generation + 1}, mode=0o600)

    def status(self, name: str) -> RuntimeStatus:
        files = DeploymentFiles(self.root, check_name(name))
        desired = read_json(files.desired)
        if not files.dir.is_dir() or not isinstance(desired, dict):
            return RuntimeStatus(phase=Phase.absent)
        endpoint = self._endpoint(files)
        if desired.get("removed"):
            return RuntimeStatus(phase=Phase.pending, message="being removed")
        observed = read_json(files.status)
        if not isinstance(observed, dict):
            if agent_running(self.root):
                return RuntimeStatus(
                    phase=Phase.pending,
                    message="waiting for the agent to start the replicas",
                    endpoint_url=endpoint,
                    desired_replicas=int(desired.get("replicas_min", 0)),
                )
            return self._no_agent(endpoint, int(desired.get("replicas_min", 0)))

        ready = int(observed.get("ready_replicas") or 0)
        wanted = int(observed.get("desired_replicas") or 0)
        revision = observed.get("serving_revision")
        phase = _phase(observed.get("phase"))
        reason = _reason(observed.get("reason"))
        message = str(observed.get("message") or "")
        age = time.time() - float(observed.get("updated_at") or 0)
        if age > self.stale_after and not agent_running(self.root):
            status = self._no_agent(endpoint, wanted)
            return RuntimeStatus(
                phase=Phase.degraded if ready else status.phase,
                reason=status.reason,
                message=f"{status.message} (last report {age:.0f}s ago: {phase.value})",
                endpoint_url=endpoint,
                ready_replicas=ready,
                desired_replicas=wanted,
                serving_revision=revision if isinstance(revision, int) else None,
            )
        if int(observed.get("observed_generation") or 0) < int(desired.get("generation", 0)):
            # The agent has not seen the latest apply yet: what it reports is about the old one.
            phase = Phase.starting if phase in (Phase.ready, Phase.degraded) else phase
            message = "the agent has not picked up the latest change yet"
        return RuntimeStatus(
            phase=phase,
            reason=reason,
            message=message,
            endpoint_url=endpoint,
            ready_replicas=ready,
            desired_replicas=wanted,
            serving_revision=revision if isinstance(revision, int) else None,
        )

    def logs(self, name: str, tail: int = 200) -> list[str]:
        files = DeploymentFiles(self.root, check_name(name))
        if tail <= 0:
            return []
        per_slot = {slot: _tail_lines(files.log_file(slot), tail) for slot in files.slots("log")}
        # Keep `tail` lines in all, dropping the oldest lines of the chattiest replica first.
        while sum(len(lines) for lines in per_slot.values()) > tail:
            chattiest = max(per_slot, key=lambda s: len(per_slot[s]))
            per_slot[chattiest].pop(0)
        return [f"replica-{slot} | {line}" for slot, lines in per_slot.items() for line in lines]

    def remove(self, name: str) -> None:
        files = DeploymentFiles(self.root, check_name(name))
        if not files.dir.is_dir():
            return
        previous = read_json(files.desired)
        previous = previous if isinstance(previous, dict) else {}
        generation = int(previous.get("generation", 0)) + 1
        marked = {
            "replicas_min": 0,
            "replicas_max": 0,
            "host": self.host,
            **previous,
            "removed": True,
            "generation": generation,
        }
        with contextlib.suppress(FileNotFoundError):
            write_json_atomic(files.desired, marked, mode=0o600)
        deadline = time.monotonic() + self.remove_timeout
        if agent_running(self.root):
            while time.monotonic() < deadline and not self._agent_stopped(files, generation):
                time.sleep(0.05)
        # No agent, or it did not finish in time: stop whatever still runs ourselves.
        self._stop_processes(files, deadline)
        for _ in range(20):
            # The agent may drop one more status.json in while we delete; try again.
            shutil.rmtree(files.dir, ignore_errors=True)
            if not files.dir.exists():
                return
            time.sleep(0.05)
        raise OSError(f"could not delete {files.dir}")

    # ---- helpers ----------------------------------------------------------------------------

    def _ensure_port(self, files: DeploymentFiles) -> int:
        """The deployment's public port: allocated once, then read from ``<name>/port``."""
        with file_lock(self.root / PORTS_LOCK):
            port = _read_port(files.port)
            if port is not None:
                return port
            taken: set[int] = set()
            for other in deployment_names(self.root):
                other_files = DeploymentFiles(self.root, other)
                other_port = _read_port(other_files.port)
                if other_port is not None:
                    taken.add(other_port)
                for slot in other_files.slots("pid"):
                    data = read_json(other_files.pid_file(slot))
                    if isinstance(data, dict) and isinstance(data.get("admin_port"), int):
                        taken.add(data["admin_port"])
            port = allocate_port(self.host, exclude=taken, seed=files.name)
            write_bytes_atomic(files.port, f"{port}\n".encode(), mode=0o644)
            return port

    def _endpoint(self, files: DeploymentFiles) -> str | None:
        port = _read_port(files.port)
        if port is None:
            return None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104
            self.host, self.host
        )
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def _no_agent(self, endpoint: str | None, wanted: int) -> RuntimeStatus:
        return RuntimeStatus(
            phase=Phase.pending,
            reason=Reason.runtime_unavailable,
            message=f"no local agent supervises {self.root}; start it with `konan agent` "
            "(or `konan up`)",
            endpoint_url=endpoint,
            desired_replicas=wanted,
        )

    def _agent_stopped(self, files: DeploymentFiles, generation: int) -> bool:
        observed = read_json(files.status)
        return (
            isinstance(observed, dict)
            and observed.get("phase") == Phase.absent.value
            and int(observed.get("observed_generation") or 0) >= generation
            and not files.slots("pid")
        )

    def _stop_processes(self, files: DeploymentFiles, deadline: float) -> None:
        """SIGTERM every model server of this deployment, SIGKILL what outlives ``deadline``."""
        spec = str(files.spec)
        idents: dict[int, ProcessIdentity] = {}
        for slot in files.slots("pid"):
            data = read_json(files.pid_file(slot))
            ident = ProcessIdentity.from_json(
                data.get("identity") if isinstance(data, dict) else None
            )
            if ident is not None and _serves(ident.argv, spec):
                idents[ident.pid] = ident
        for ident in find_processes(lambda argv: _serves(argv, spec)):
            idents.setdefault(ident.pid, ident)
        running = [i for i in idents.values() if signal_process(i, signal.SIGTERM)]
        grace_end = max(deadline, time.monotonic() + 1.0)
        while running and time.monotonic() < grace_end:
            time.sleep(0.05)
            running = [i for i in running if is_running(i)]
        for ident in running:
            signal_process(ident, signal.SIGKILL)
        kill_end = time.monotonic() + 5.0
        while running and time.monotonic() < kill_end:
            time.sleep(0.05)
            running = [i for i in running if is_running(i)]


def _serves(argv: tuple[str, ...], spec: str) -> bool:
    """A model-server command line for this spec file (``… --spec <spec> …``)."""
    return (
        any(argv[i] == "--spec" and argv[i + 1] == spec for i in range(len(argv) - 1))
        and "--admin-port" in argv
    )


def _read_port(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None


def _phase(value: Any) -> Phase:
    try:
        return Phase(value)
    except ValueError:
        return Phase.pending


def _reason(value: Any) -> Reason | None:
    try:
        return Reason(value) if value else None
    except ValueError:
        return None


def _tail_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of a file, reading backwards in blocks (logs can be large)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            end = fh.tell()
            data = b""
            block = 64 * 1024
            while end > 0 and data.count(b"\n") <= count:
                start = max(0, end - block)
                fh.seek(start)
                data = fh.read(end - start) + data
                end = start
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:]
