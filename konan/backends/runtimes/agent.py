"""The local agent: supervises the model-server processes of every local deployment.

``konan agent`` (started by ``konan up``) calls :func:`run_agent`. Every ``tick`` (0.5 s) it
reads each deployment folder that :class:`~konan.backends.runtimes.local.LocalProcessRuntime`
wrote (see ``layout.py``) and converges what runs towards it:

* keeps between ``replicas_min`` and ``replicas_max`` replicas of
  ``python -m konan.serving --spec … --host … --port <shared> --reuse-port --admin-port <own>``
  running; all replicas of a deployment share its public port through SO_REUSEPORT, each has a
  private admin port that the agent probes (``/readyz`` and ``/stats``);
* replaces a replica that exits at once, and backs off exponentially while one keeps crashing
  (reason ``crash_loop`` from the third failure in a row);
* kills a replica whose admin port stops answering (``health_check_failed``);
* autoscales on in-flight requests: ``ceil(sum(in_flight) / target_in_flight)`` replicas,
  clamped to [min, max]; up at once, down one replica per calm period;
* replaces replicas one at a time (surge one, then stop one) when their environment changed; a
  new spec needs no restart, the servers re-read it;
* stops replicas with SIGTERM and waits, SIGKILL after a grace period;
* writes ``status.json`` for the runtime's ``status()``.

It survives its own restart: replicas run in their own session and are recorded in pid files
(PID + start time + argv), which the next agent adopts; a recorded PID that now belongs to some
other process is left alone, and model servers under the root without a pid file are stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from konan.backends.runtimes.base import Phase, Reason
from konan.backends.runtimes.layout import (
    AGENT_LOCK,
    PORTS_LOCK,
    DeploymentFiles,
    deployment_names,
    file_lock,
    make_private_dir,
    read_json,
    try_lock,
    write_json_atomic,
)
from konan.backends.runtimes.ports import allocate_port, port_is_free
from konan.backends.runtimes.processes import (
    ProcessIdentity,
    find_processes,
    identify,
    is_running,
    signal_process,
)
from konan.core.settings import Settings
from konan.serving.spec import ServingSpec

log = logging.getLogger("konan.runtime.agent")

COMPONENT = "agent"
SERVER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "konan.serving")
TCP_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@dataclass(frozen=True)
class AgentTuning:
    """Timings of the control loop; the defaults suit production, tests shorten them."""

    tick: float = 0.5
    probe_timeout: float = 1.0
    # SIGTERM → wait this long for in-flight requests to finish → SIGKILL.
    stop_grace: float = 30.0
    # Scale down one replica after the load has wanted fewer replicas for this long.
    scale_down_after: float = 60.0
    # Restart delays: the first failure restarts at once, then initial, twice that, … up to max.
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    crash_loop_after: int = 3
    # A replica ready this long has proven itself: its slot's failure count resets.
    stable_after: float = 10.0
    # Kill a replica whose admin port never answered within startup_timeout, or stopped
    # answering for liveness_timeout.
    startup_timeout: float = 120.0
    liveness_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    log_max_bytes: int = 10 * 1024 * 1024


def enable_tcp_migrate_req() -> bool:
    """Ask the kernel to move connections queued on a closing SO_REUSEPORT listener to the
    other listeners instead of resetting them (Linux ≥ 5.14). True when it is on."""
    try:
        if TCP_MIGRATE_REQ.read_text().strip() == "1":
            return True
        TCP_MIGRATE_REQ.write_text("1\n")
        return TCP_MIGRATE_REQ.read_text().strip() == "1"
    except OSError as exc:
        log.warning(
            "could not enable net.ipv4.tcp_migrate_req (%s); connections queued on a stopping "
            "replica may be reset — run `sysctl -w net.ipv4.tcp_migrate_req=1` as root",
            exc,
        )
        return False


def replica_env(inherited: Mapping[str, str], env: Mapping[str, Any]) -> dict[str, str]:
    """The environment of a replica: the agent's own, plus ``env.json``.

    The agent's KONAN_* settings are dropped first: the control plane chose every setting a
    replica gets (env.json), and the agent's database URL, auth key or admin password must not
    reach a process that runs user model code.
    """
    child = {k: v for k, v in inherited.items() if not k.startswith("KONAN_")}
    child.update({str(k): str(v) for k, v in env.items()})
    child.setdefault("PYTHONUNBUFFERED", "1")
    return child


def autoscale(
    *,
    current: int,
    load: float,
    replicas_min: int,
    replicas_max: int,
    target_in_flight: float,
    calm_since: float | None,
    now: float,
    scale_down_after: float,
) -> tuple[int, float | None]:
    """The replica count to run now, and since when the load has wanted fewer replicas.

    ``ceil(load / target_in_flight)`` clamped to [min, max]: up at once, down one replica per
    ``scale_down_after`` seconds of calm. ``replicas_min == 0`` means stopped (nothing would
    see the first request of a deployment scaled to zero).
    """
    if replicas_min <= 0:
        return 0, None
    ceiling = max(replicas_min, replicas_max)
    bounded = min(max(current, replicas_min), ceiling)
    wanted = min(max(math.ceil(load / target_in_flight), replicas_min), ceiling)
    if wanted >= bounded:
        return wanted, None
    if calm_since is None:
        return bounded, now
    if now - calm_since >= scale_down_after:
        return bounded - 1, now
    return bounded, calm_since


# ---- the agent's picture of what runs ---------------------------------------------------------


@dataclass
class _Replica:
    slot: int
    ident: ProcessIdentity
    host: str
    admin_port: int
    config: str
    proc: subprocess.Popen[bytes] | None  # None when adopted from an earlier agent
    started: float
    ready: bool = False
    revision: int | None = None
    in_flight: int = 0
    # Average requests in flight over the server's last ~10 s. A server answering on its event
    # loop takes one request at a time, so the instant in_flight rarely exceeds 1 even when it
    # is saturated; this average is the load signal autoscaling uses.
    concurrency: float = 0.0
    reason: str | None = None  # why /readyz says not ready
    error: str | None = None  # a revision that failed to load (may be ready on an older one)
    last_answer: float | None = None
    ready_since: float | None = None
    stopping_since: float | None = None
    killed: bool = False
    hung: bool = False

    @property
    def pid(self) -> int:
        return self.ident.pid

    def exited(self) -> tuple[bool, int | None]:
        """(exited, exit code); the code is unknown for a replica we adopted."""
        if self.proc is not None:
            code = self.proc.poll()
            return code is not None, code
        return not is_running(self.ident), None

    def send(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
        else:
            signal_process(self.ident, sig)

    def state(self) -> str:
        if self.stopping_since is not None:
            return "stopping"
        if self.ready:
            return "ready"
        return "starting" if self.last_answer is None else "unready"


@dataclass
class _Desired:
    replicas_min: int
    replicas_max: int
    host: str
    generation: int
    removed: bool

    @classmethod
    def parse(cls, data: Any, default_host: str) -> _Desired | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                replicas_min=max(0, int(data["replicas_min"])),
                replicas_max=max(0, int(data["replicas_max"])),
                host=str(data.get("host") or default_host),
                generation=int(data.get("generation", 0)),
                removed=bool(data.get("removed", False)),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass
class _Deployment:
    files: DeploymentFiles
    replicas: dict[int, _Replica] = field(default_factory=dict)
    target: int | None = None
    calm_since: float | None = None
    failures: dict[int, int] = field(default_factory=dict)
    not_before: dict[int, float] = field(default_factory=dict)
    problem: str = ""
    problem_reason: Reason | None = None
    inputs: tuple[str, int | None] | None = None
    spec_key: tuple[int, int, int] | None = None
    spec_revision: int | None = None
    spec_error: str | None = None
    last_status: dict[str, Any] | None = None
    status_written: float = 0.0
    next_log_check: float = 0.0

    @property
    def name(self) -> str:
        return self.files.name


class Agent:
    """Supervises every deployment folder under ``root``; see the module docstring."""

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        *,
        target_in_flight: float = 0.75,
        server_command: Sequence[str] = SERVER_COMMAND,
        session_factory: sessionmaker[Session] | None = None,
        tuning: AgentTuning | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.host = host
        self.target_in_flight = target_in_flight
        self.server_command = tuple(server_command)
        self.session_factory = session_factory
        self.tuning = tuning or AgentTuning()
        self.deployments: dict[str, _Deployment] = {}
        self._strays: list[_Replica] = []  # processes being stopped outside any deployment
        self._last_tick = time.monotonic()
        self._pool: ThreadPoolExecutor | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Supervise until ``stop`` is set, then stop every replica and return."""
        make_private_dir(self.root)
        lock_fd = self._wait_for_lock(stop)
        if lock_fd is None:
            return
        heartbeat_stop = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, args=(heartbeat_stop,), name="konan-agent-heartbeat"
        )
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="konan-agent-probe")
        try:
            enable_tcp_migrate_req()
            self._adopt()
            self._last_tick = time.monotonic()
            heartbeat.start()
            log.info("agent supervising %s", self.root)
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self.tick()
                except Exception:  # a bad pass must not take every model server down with it
                    log.exception("agent pass failed; retrying")
                self._last_tick = time.monotonic()
                stop.wait(max(0.0, self.tuning.tick - (self._last_tick - started)))
        finally:
            try:
                self._shutdown()
            finally:
                heartbeat_stop.set()
                if heartbeat.is_alive():
                    heartbeat.join()
                self._pool.shutdown(wait=True)
                self._pool = None
                os.close(lock_fd)
                log.info("agent stopped")

    def tick(self) -> None:
        """One pass of the control loop over every deployment folder."""
        names = set(deployment_names(self.root))
        for name in sorted(set(self.deployments) - names):
            # The folder is gone (removed while we were not looking): nothing may keep running.
            gone = self.deployments.pop(name)
            for replica in gone.replicas.values():
                self._begin_stop(replica)
                self._strays.append(replica)
        for name in sorted(names):
            if name not in self.deployments:
                self.deployments[name] = _Deployment(DeploymentFiles(self.root, name))
        self._reap_strays()
        for dep in self.deployments.values():
            self._reap(dep)
        self._probe_all()
        for dep in list(self.deployments.values()):
            try:
                self._converge(dep)
            except Exception:
                log.exception("deployment %s: supervision pass failed", dep.name)

    # ---- per deployment -----------------------------------------------------------------------

    def _converge(self, dep: _Deployment) -> None:
        now = time.monotonic()
        desired = _Desired.parse(read_json(dep.files.desired), self.host)
        if desired is None:  # apply() has not finished writing the folder yet
            return
        if desired.removed:
            for replica in dep.replicas.values():
                self._begin_stop(replica)
            self._enforce_grace(dep, now)
            if not dep.replicas:
                self._write_status(dep, self._absent_status(desired), force=False)
            return
        port = _read_port(dep.files)
        env = read_json(dep.files.env)
        env = env if isinstance(env, dict) else {}
        config = self._config_hash(desired.host, port, env)
        self._read_spec(dep)
        if (config, dep.spec_revision) != dep.inputs:
            # New env or a new spec may well fix what kept crashing: start over without delay.
            if dep.inputs is not None:
                dep.failures.clear()
                dep.not_before.clear()
                dep.problem, dep.problem_reason = "", None
            dep.inputs = (config, dep.spec_revision)

        live = [r for r in dep.replicas.values() if r.stopping_since is None]
        load = float(sum(max(r.in_flight, r.concurrency) for r in live))
        if dep.target is None:
            current_config = sum(1 for r in live if r.config == config)
            dep.target = current_config or desired.replicas_min
        dep.target, dep.calm_since = autoscale(
            current=dep.target,
            load=load,
            replicas_min=desired.replicas_min,
            replicas_max=desired.replicas_max,
            target_in_flight=self.target_in_flight,
            calm_since=dep.calm_since,
            now=now,
            scale_down_after=self.tuning.scale_down_after,
        )
        if port is None or dep.spec_revision is None:
            # Nothing can start without a port and a valid spec; keep what runs.
            pass
        else:
            self._reconcile_replicas(dep, desired, port, env, config, now)
        self._note_stable(dep, now)
        self._check_liveness(dep, now)
        self._enforce_grace(dep, now)
        self._maybe_rotate_logs(dep, now)
        self._write_status(dep, self._status(dep, desired, port, config, now))

    def _reconcile_replicas(
        self,
        dep: _Deployment,
        desired: _Desired,
        port: int,
        env: dict[str, Any],
        config: str,
        now: float,
    ) -> None:
        target = dep.target or 0
        live = [r for r in dep.replicas.values() if r.stopping_since is None]
        current = [r for r in live if r.config == config]
        outdated = [r for r in live if r.config != config]

        # Rolling replacement: an outdated replica goes once a current one is ready to take
        # its place (or at once when none is wanted).
        ready_current = sum(1 for r in current if r.ready)
        for replica in _stop_order(outdated):
            if ready_current + len(outdated) <= target:
                break
            outdated.remove(replica)
            self._begin_stop(replica)

        # Scale down: not-ready replicas first, then the highest slots.
        excess = len(current) - target
        for replica in _stop_order(current)[: max(0, excess)]:
            self._begin_stop(replica)
            current.remove(replica)
            dep.failures.pop(replica.slot, None)
            dep.not_before.pop(replica.slot, None)

        missing = target - len(current)
        if missing <= 0:
            return
        if outdated:
            # Surge one at a time while replacing: start the next once the last is ready.
            if any(not r.ready for r in current):
                return
            missing = 1
        used = set(dep.replicas)
        slot = 0
        while missing > 0:
            while slot in used:
                slot += 1
            used.add(slot)
            missing -= 1
            if dep.not_before.get(slot, 0.0) > now:
                continue  # backing off: this slot waits, others do not take its place
            self._start(dep, slot, desired.host, port, env, config)

    def _start(
        self,
        dep: _Deployment,
        slot: int,
        host: str,
        port: int,
        env: dict[str, Any],
        config: str,
    ) -> None:
        files = dep.files
        admin_port = self._allocate_admin_port(host)
        argv = [
            *self.server_command,
            "--spec",
            str(files.spec),
            "--host",
            host,
            "--port",
            str(port),
            "--reuse-port",
            "--admin-port",
            str(admin_port),
        ]
        child_env = replica_env(os.environ, env)
        log_path = files.log_file(slot)
        _rotate(log_path, self.tuning.log_max_bytes)
        try:
            with open(log_path, "ab") as out:
                os.chmod(log_path, 0o600)
                out.write(f"--- konan agent: starting replica {slot} at {_now_iso()}\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=child_env,
                    cwd=files.dir,
                    # Its own session: Ctrl-C on the agent's terminal does not reach it, and it
                    # outlives an agent crash so the next agent can adopt it.
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            self._record_failure(dep, slot, f"replica {slot} could not start: {exc}", None)
            return
        # Our argv, not /proc's: that may still read empty while the child execs.
        found = identify(proc.pid)
        ident = ProcessIdentity(proc.pid, found.start_ticks if found else -1, tuple(argv))
        replica = _Replica(
            slot=slot,
            ident=ident,
            host=host,
            admin_port=admin_port,
            config=config,
            proc=proc,
            started=time.monotonic(),
        )
        try:
            write_json_atomic(
                files.pid_file(slot),
                {
                    "identity": ident.to_json(),
                    "admin_port": admin_port,
                    "config": config,
                    "slot": slot,
                    "started_at": time.time(),
                },
                durable=False,
            )
        except FileNotFoundError:
            # The folder was deleted while we started it: this replica must not live on.
            proc.kill()
            proc.wait()
            return
        dep.replicas[slot] = replica
        log.info("deployment %s: started replica %d (pid %d)", dep.name, slot, proc.pid)

    def _reap(self, dep: _Deployment) -> None:
        now = time.monotonic()
        for slot, replica in list(dep.replicas.items()):
            exited, code = replica.exited()
            if not exited:
                continue
            del dep.replicas[slot]
            with contextlib.suppress(FileNotFoundError):
                dep.files.pid_file(slot).unlink()
            if replica.stopping_since is not None:
                log.info("deployment %s: replica %d stopped", dep.name, slot)
                continue
            how = f"exited with code {code}" if code is not None else "exited"
            if replica.hung:
                how = "stopped answering its health checks and was killed"
            stable = (
                replica.ready_since is not None
                and now - replica.ready_since >= self.tuning.stable_after
            )
            if stable:
                dep.failures[slot] = 0
            self._record_failure(
                dep,
                slot,
                f"replica {slot} (pid {replica.pid}) {how}",
                Reason.health_check_failed if replica.hung else None,
            )

    def _record_failure(
        self, dep: _Deployment, slot: int, message: str, reason: Reason | None
    ) -> None:
        failures = dep.failures.get(slot, 0) + 1
        dep.failures[slot] = failures
        delay = 0.0
        if failures > 1:
            delay = min(self.tuning.backoff_initial * 2 ** (failures - 2), self.tuning.backoff_max)
        dep.not_before[slot] = time.monotonic() + delay
        dep.problem = message + (f"; restarting in {delay:.1f}s" if delay else "; restarting")
        dep.problem_reason = reason
        log.warning("deployment %s: %s", dep.name, dep.problem)
        with contextlib.suppress(OSError), open(dep.files.log_file(slot), "ab") as out:
            out.write(f"--- konan agent: {dep.problem} ({_now_iso()})\n".encode())

    def _note_stable(self, dep: _Deployment, now: float) -> None:
        """A slot's failure count resets once its replica has stayed ready for a while."""
        for replica in dep.replicas.values():
            if (
                replica.ready_since is not None
                and now - replica.ready_since >= self.tuning.stable_after
                and dep.failures.get(replica.slot)
            ):
                dep.failures[replica.slot] = 0
        if not any(dep.failures.values()):
            dep.problem, dep.problem_reason = "", None

    def _check_liveness(self, dep: _Deployment, now: float) -> None:
        for replica in dep.replicas.values():
            if replica.stopping_since is not None or replica.hung:
                continue
            if replica.last_answer is None:
                silent = now - replica.started > self.tuning.startup_timeout
            else:
                silent = now - replica.last_answer > self.tuning.liveness_timeout
            if silent:
                log.warning(
                    "deployment %s: replica %d (pid %d) does not answer on its admin port; "
                    "killing it",
                    dep.name,
                    replica.slot,
                    replica.pid,
                )
                replica.hung = True
                replica.send(signal.SIGKILL)

    def _enforce_grace(self, dep: _Deployment, now: float) -> None:
        for replica in dep.replicas.values():
            self._kill_if_overdue(replica, now)

    def _kill_if_overdue(self, replica: _Replica, now: float) -> None:
        if (
            replica.stopping_since is not None
            and not replica.killed
            and now - replica.stopping_since > self.tuning.stop_grace
        ):
            log.warning("replica pid %d ignored SIGTERM; sending SIGKILL", replica.pid)
            replica.killed = True
            replica.send(signal.SIGKILL)

    def _begin_stop(self, replica: _Replica) -> None:
        if replica.stopping_since is None:
            replica.stopping_since = time.monotonic()
            replica.ready = False
            replica.send(signal.SIGTERM)

    # ---- observing ----------------------------------------------------------------------------

    def _probe_all(self) -> None:
        targets = [
            replica
            for dep in self.deployments.values()
            for replica in dep.replicas.values()
            if replica.stopping_since is None
        ]
        if not targets or self._pool is None:
            return
        futures = [
            (replica, self._pool.submit(self._probe, _probe_host(replica.host), replica.admin_port))
            for replica in targets
        ]
        now = time.monotonic()
        for replica, future in futures:
            readyz, stats = future.result()
            self._observe(replica, readyz, stats, now)

    def _probe(self, host: str, port: int) -> tuple[tuple[int, Any] | None, tuple[int, Any] | None]:
        timeout = self.tuning.probe_timeout
        return _get_json(host, port, "/readyz", timeout), _get_json(host, port, "/stats", timeout)

    def _observe(
        self,
        replica: _Replica,
        readyz: tuple[int, Any] | None,
        stats: tuple[int, Any] | None,
        now: float,
    ) -> None:
        if readyz is None and stats is None:
            replica.ready = False
            replica.in_flight = 0
            replica.ready_since = None
            return
        replica.last_answer = now
        ready = readyz is not None and readyz[0] == 200
        replica.reason = replica.error = None
        if readyz is not None and isinstance(readyz[1], dict):
            doc = readyz[1]
            if not ready and doc.get("reason"):
                replica.reason = str(doc["reason"])
            if doc.get("error"):
                replica.error = str(doc["error"])
        body = stats[1] if stats is not None and stats[0] == 200 else None
        if isinstance(body, dict):
            revision = body.get("revision")
            replica.revision = revision if isinstance(revision, int) else None
            in_flight = body.get("in_flight")
            replica.in_flight = in_flight if isinstance(in_flight, int) else 0
            concurrency = body.get("concurrency")
            replica.concurrency = (
                float(concurrency) if isinstance(concurrency, int | float) else 0.0
            )
            if body.get("error"):
                replica.error = str(body["error"])
        replica.ready = ready
        if ready:
            replica.ready_since = replica.ready_since or now
        else:
            replica.ready_since = None

    def _read_spec(self, dep: _Deployment) -> None:
        try:
            st = dep.files.spec.stat()
        except FileNotFoundError:
            dep.spec_key, dep.spec_revision, dep.spec_error = None, None, "spec.json is missing"
            return
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == dep.spec_key:
            return
        try:
            spec = ServingSpec.read(dep.files.spec)
        except (OSError, ValueError) as exc:
            dep.spec_revision, dep.spec_error = None, f"spec.json is invalid: {exc}"
        else:
            dep.spec_revision, dep.spec_error = spec.revision, None
        dep.spec_key = key

    # ---- status --------------------------------------------------------------------------------

    def _status(
        self, dep: _Deployment, desired: _Desired, port: int | None, config: str, now: float
    ) -> dict[str, Any]:
        target = dep.target or 0
        live = [r for r in dep.replicas.values() if r.stopping_since is None]
        ready = [r for r in live if r.ready]
        on_revision = [r for r in ready if r.revision == dep.spec_revision and r.config == config]
        revisions = {r.revision for r in ready}
        serving_revision = revisions.pop() if len(revisions) == 1 else None
        looping = [s for s, n in dep.failures.items() if n >= self.tuning.crash_loop_after]
        reported = [_reason_of(r.reason) or _reason_of(r.error) for r in live if not r.ready]
        known = next((r for r in reported if r is not None), None)
        # Ready on an older revision but unable to load the new one: serving, not converging.
        stuck = next(
            (_reason_of(r.error) for r in ready if r not in on_revision and _reason_of(r.error)),
            None,
        )

        phase: Phase
        reason: Reason | None = None
        message = ""
        if dep.spec_error:
            phase, reason, message = Phase.failed, Reason.load_error, dep.spec_error
        elif port is None:
            phase, message = Phase.pending, "no port allocated yet"
        elif target == 0 and not live:
            phase, message = Phase.ready, "scaled to zero (replicas_min is 0)"
        elif len(on_revision) >= target and target > 0:
            phase = Phase.ready
            message = f"{len(on_revision)} of {target} replicas ready"
        elif on_revision:
            phase = Phase.degraded
            message = (
                f"{len(on_revision)} of {target} replicas ready on revision {dep.spec_revision}"
            )
        elif looping:
            phase, reason = Phase.failed, Reason.crash_loop
        elif known is not None and not ready:
            phase, reason = Phase.failed, known
        elif ready and stuck is not None:
            phase, reason = Phase.degraded, stuck
            message = (
                f"revision {dep.spec_revision} cannot be served; "
                f"still serving revision {serving_revision}"
            )
        elif ready:
            phase = Phase.starting
            message = (
                f"rolling out revision {dep.spec_revision}; serving revision {serving_revision}"
            )
        elif live:
            phase, message = Phase.starting, f"{len(live)} replica(s) starting"
        else:
            phase, message = Phase.pending, "waiting to start replicas"
        if phase in (Phase.degraded, Phase.failed, Phase.starting) and reason is None:
            if looping:
                reason = Reason.crash_loop
            elif known is not None:
                reason = known
            elif dep.problem_reason is not None:
                reason = dep.problem_reason
        details = [m for m in (message, dep.problem) if m]
        details += sorted({r.reason for r in live if not r.ready and r.reason})
        details += sorted({r.error for r in live if r.error and r.error not in details})
        if port is not None and not live and dep.problem and not port_is_free(desired.host, port):
            details.append(f"port {port} on {desired.host} is in use by another process")
        return {
            "phase": phase.value,
            "reason": reason.value if reason else None,
            "message": "; ".join(details),
            "ready_replicas": len(ready),
            "desired_replicas": target,
            "serving_revision": serving_revision,
            "spec_revision": dep.spec_revision,
            "observed_generation": desired.generation,
            "port": port,
            "host": desired.host,
            "replicas": [
                {
                    "slot": r.slot,
                    "pid": r.pid,
                    "admin_port": r.admin_port,
                    "state": r.state(),
                    "revision": r.revision,
                    "in_flight": r.in_flight,
                    "failures": dep.failures.get(r.slot, 0),
                }
                for r in sorted(dep.replicas.values(), key=lambda r: r.slot)
            ],
            "agent_pid": os.getpid(),
        }

    def _absent_status(self, desired: _Desired) -> dict[str, Any]:
        return {
            "phase": Phase.absent.value,
            "reason": None,
            "message": "removed; every replica stopped",
            "ready_replicas": 0,
            "desired_replicas": 0,
            "serving_revision": None,
            "observed_generation": desired.generation,
            "replicas": [],
            "agent_pid": os.getpid(),
        }

    def _write_status(self, dep: _Deployment, status: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        # Rewrite unchanged status every 2 s so that readers can tell a live agent from a dead one.
        if not force and status == dep.last_status and now - dep.status_written < 2.0:
            return
        with contextlib.suppress(FileNotFoundError):
            write_json_atomic(
                dep.files.status, {**status, "updated_at": time.time()}, mode=0o644, durable=False
            )
            dep.last_status, dep.status_written = status, now

    # ---- start and stop of the whole agent ---------------------------------------------------

    def _wait_for_lock(self, stop: threading.Event) -> int | None:
        warned = False
        while not stop.is_set():
            fd = try_lock(self.root / AGENT_LOCK)
            if fd is not None:
                return fd
            if not warned:
                log.warning("another agent supervises %s; waiting for it to stop", self.root)
                warned = True
            stop.wait(self.tuning.tick)
        return None

    def _adopt(self) -> None:
        """Take over replicas an earlier agent started; stop model servers nobody recorded."""
        adopted: set[int] = set()
        for name in deployment_names(self.root):
            dep = _Deployment(DeploymentFiles(self.root, name))
            self.deployments[name] = dep
            for slot in dep.files.slots("pid"):
                path = dep.files.pid_file(slot)
                data = read_json(path)
                data = data if isinstance(data, dict) else {}
                ident = ProcessIdentity.from_json(data.get("identity"))
                if ident is None or not is_running(ident) or not self._is_ours(ident.argv):
                    log.info("deployment %s: dropping stale pid file of replica %d", name, slot)
                    path.unlink(missing_ok=True)
                    continue
                dep.replicas[slot] = _Replica(
                    slot=slot,
                    ident=ident,
                    host=_arg(ident.argv, "--host") or self.host,
                    admin_port=int(data.get("admin_port", 0)),
                    config=str(data.get("config", "")),
                    proc=None,
                    started=time.monotonic(),
                )
                adopted.add(ident.pid)
                log.info("deployment %s: adopted replica %d (pid %d)", name, slot, ident.pid)
        for ident in find_processes(self._is_ours):
            if ident.pid in adopted:
                continue
            log.warning("stopping model server pid %d that no pid file records", ident.pid)
            stray = _Replica(-1, ident, self.host, 0, "", None, time.monotonic())
            self._begin_stop(stray)
            self._strays.append(stray)

    def _is_ours(self, argv: tuple[str, ...]) -> bool:
        """A model server started for a deployment under this root (by any agent)."""
        marker = self.server_command[1:]
        if tuple(argv[1 : 1 + len(marker)]) != marker or "--spec" not in argv:
            return False
        index = argv.index("--spec")
        if index + 1 >= len(argv):
            return False
        spec = Path(argv[index + 1])
        return spec.name == "spec.json" and spec.parent.parent == self.root

    def _reap_strays(self) -> None:
        now = time.monotonic()
        for stray in list(self._strays):
            if stray.exited()[0]:
                self._strays.remove(stray)
            else:
                self._kill_if_overdue(stray, now)

    def _shutdown(self) -> None:
        every = [r for dep in self.deployments.values() for r in dep.replicas.values()]
        for replica in every + self._strays:
            self._begin_stop(replica)
        deadline = time.monotonic() + self.tuning.stop_grace
        while time.monotonic() < deadline:
            for dep in self.deployments.values():
                self._reap(dep)
            self._reap_strays()
            if not self._strays and not any(d.replicas for d in self.deployments.values()):
                break
            time.sleep(0.05)
        for dep in self.deployments.values():
            for replica in dep.replicas.values():
                replica.killed = True
                replica.send(signal.SIGKILL)
                if replica.proc is not None:
                    replica.proc.wait()
            for slot in list(dep.replicas):
                dep.files.pid_file(slot).unlink(missing_ok=True)
            dep.replicas.clear()
            desired = _Desired.parse(read_json(dep.files.desired), self.host)
            if desired is None:
                continue
            if desired.removed:
                self._write_status(dep, self._absent_status(desired), force=True)
            else:
                status = dict(dep.last_status or {})
                status.update(
                    phase=Phase.pending.value,
                    reason=Reason.runtime_unavailable.value,
                    message="the local agent stopped; start it with `konan agent` or `konan up`",
                    ready_replicas=0,
                    serving_revision=None,
                    replicas=[],
                )
                self._write_status(dep, status, force=True)
        for stray in self._strays:
            stray.send(signal.SIGKILL)
        self._strays.clear()

    # ---- helpers -------------------------------------------------------------------------------

    def _config_hash(self, host: str, port: int | None, env: dict[str, Any]) -> str:
        blob = json.dumps(
            {"command": self.server_command, "host": host, "port": port, "env": env},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _allocate_admin_port(self, host: str) -> int:
        with file_lock(self.root / PORTS_LOCK):
            taken = {r.admin_port for d in self.deployments.values() for r in d.replicas.values()}
            for name in deployment_names(self.root):
                port = _read_port(DeploymentFiles(self.root, name))
                if port is not None:
                    taken.add(port)
            return allocate_port(host, exclude=taken)

    def _maybe_rotate_logs(self, dep: _Deployment, now: float) -> None:
        if now < dep.next_log_check:
            return
        dep.next_log_check = now + 10.0
        for slot in dep.files.slots("log"):
            _rotate(dep.files.log_file(slot), self.tuning.log_max_bytes)

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        if self.session_factory is None:
            return
        from konan.db import heartbeats
        from konan.db.engine import unit_of_work

        instance = heartbeats.instance_name()
        failing = False
        while True:
            # Beat only while the control loop is turning: a stuck loop must look dead.
            if time.monotonic() - self._last_tick < max(10.0, 4 * self.tuning.tick):
                try:
                    with unit_of_work(self.session_factory) as session:
                        heartbeats.beat(session, COMPONENT, instance)
                    if failing:
                        log.info("agent heartbeat recorded again")
                    failing = False
                except Exception as exc:
                    if not failing:
                        log.warning("could not record the agent heartbeat: %s", _first_line(exc))
                    failing = True
            if stop.wait(self.tuning.heartbeat_interval):
                break
        with contextlib.suppress(Exception), unit_of_work(self.session_factory) as session:
            heartbeats.forget(session, COMPONENT, instance)


def run_agent(settings: Settings, stop: threading.Event) -> None:
    """Supervise the local model servers under ``settings.serving_root`` until ``stop`` is set.

    The caller (``konan agent``) sets ``stop`` on SIGTERM/SIGINT; every replica then gets
    SIGTERM and the call returns once they have exited.
    """
    from konan.db.engine import make_engine, make_session_factory

    engine = make_engine(settings.database_url, settings)
    try:
        agent = Agent(
            settings.serving_root,
            settings.runtime.local_host,
            target_in_flight=settings.runtime.target_in_flight,
            session_factory=make_session_factory(engine),
        )
        agent.run(stop)
    finally:
        engine.dispose()


# ---- small helpers ---------------------------------------------------------------------------


def _stop_order(replicas: list[_Replica]) -> list[_Replica]:
    """Which replicas to stop first: those not ready, then the highest slots."""
    return sorted(replicas, key=lambda r: (r.ready, -r.slot))


def _arg(argv: tuple[str, ...], flag: str) -> str | None:
    if flag in argv:
        index = argv.index(flag)
        if index + 1 < len(argv):
            return argv[index + 1]
    return None


def _read_port(files: DeploymentFiles) -> int | None:
    try:
        return int(files.port.read_text().strip())
    except (OSError, ValueError):
        return None


def _probe_host(host: str) -> str:
    """Where to reach a server bound to ``host``: loopback for the wildcard addresses."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - comparing, not binding
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _get_json(host: str, port: int, path: str, timeout: float) -> tuple[int, Any] | None:
    """(status, parsed JSON body or None), or None when nothing answered."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        raw = response.read(65536)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return response.status, body


# What the model server's failure codes (``/readyz`` reason, ``/stats`` error: "<code>: <why>")
# mean for the deployment.
_FAILURE_CODES = {
    "artifact_missing": Reason.artifact_missing,
    "artifact_integrity": Reason.load_error,
    "load_error": Reason.load_error,
    "spec_invalid": Reason.load_error,
    "spec_unreadable": Reason.load_error,
}


def _reason_of(text: str | None) -> Reason | None:
    if not text:
        return None
    return _FAILURE_CODES.get(text.split(":", 1)[0].strip())


def _rotate(path: Path, max_bytes: int) -> None:
    """Copy-and-truncate a log over ``max_bytes`` into ``<log>.1`` (writers keep their fd)."""
    try:
        if path.stat().st_size <= max_bytes:
            return
        shutil.copyfile(path, path.with_name(path.name + ".1"))
        os.truncate(path, 0)
    except OSError:
        return


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
