"""The folder the local runtime and its agent share: one sub-folder per deployment.

``LocalProcessRuntime`` (in the worker or server process) writes what should run; the agent
(its own process, ``konan agent``) reads it, runs the model servers and writes back what it
observed. The files are the whole protocol between them, so both sides go through this module::

    <root>/
      .agent.lock              held (flock) by the one agent supervising this root
      .ports.lock              serialises port allocation between the runtime and the agent
      <name>/
        spec.json              ServingSpec (what every replica serves; replicas re-read it)
        desired.json   0600    replicas_min/max, host, generation, removed
        env.json       0600    KONAN_* env of the replicas (holds the serving token)
        port                   the deployment's public port, allocated once
        status.json            written by the agent: phase, reason, replicas, revision
        replica-<n>.pid        written by the agent: pid, start time, argv, admin port
        replica-<n>.log        stdout and stderr of replica slot n

Every JSON file is replaced atomically (temp file in the same folder, fsync, rename), so a
reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from konan.core.errors import InvalidInput
from konan.core.names import NAME_PATTERN

AGENT_LOCK = ".agent.lock"
PORTS_LOCK = ".ports.lock"

SPEC_FILE = "spec.json"
DESIRED_FILE = "desired.json"
ENV_FILE = "env.json"
PORT_FILE = "port"
STATUS_FILE = "status.json"

_REPLICA_FILE = re.compile(r"^replica-(\d+)\.(pid|log)$")
_NAME = re.compile(NAME_PATTERN)


def check_name(name: str) -> str:
    """A deployment name is a folder name here: reject anything that could leave the root."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in {".", ".."}:
        raise InvalidInput(
            f"invalid deployment name {name!r}: use 1-63 lowercase letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class DeploymentFiles:
    """Paths of one deployment's folder."""

    root: Path
    name: str

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def spec(self) -> Path:
        return self.dir / SPEC_FILE

    @property
    def desired(self) -> Path:
        return self.dir / DESIRED_FILE

    @property
    def env(self) -> Path:
        return self.dir / ENV_FILE

    @property
    def port(self) -> Path:
        return self.dir / PORT_FILE

    @property
    def status(self) -> Path:
        return self.dir / STATUS_FILE

    def pid_file(self, slot: int) -> Path:
        return self.dir / f"replica-{slot}.pid"

    def log_file(self, slot: int) -> Path:
        return self.dir / f"replica-{slot}.log"

    def slots(self, kind: str) -> list[int]:
        """Slot numbers that have a ``replica-<n>.<kind>`` file (kind: ``pid`` or ``log``)."""
        found: list[int] = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.dir):
                match = _REPLICA_FILE.match(entry.name)
                if match and match.group(2) == kind:
                    found.append(int(match.group(1)))
        return sorted(found)


def deployment_names(root: Path) -> list[str]:
    """Deployment folders under ``root`` (anything else there is ignored)."""
    names: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False) and _NAME.fullmatch(entry.name):
                names.append(entry.name)
    return sorted(names)


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a reader sees the old file or the new one, never half.

    ``durable`` also fsyncs, so the new content survives a power cut (not needed for files
    that are rewritten every few seconds anyway, like status.json).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, data: Any, mode: int = 0o600, *, durable: bool = True) -> None:
    write_bytes_atomic(
        path, json.dumps(data, indent=2, sort_keys=True).encode(), mode, durable=durable
    )


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (a writer may be racing us)."""
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock held for the block (released when the process dies, too)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_lock(path: Path) -> int | None:
    """Take an exclusive flock without waiting: the open fd (keep it to hold the lock) or None."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def agent_running(root: Path) -> bool:
    """Whether an agent holds ``root/.agent.lock`` (in this or any other process)."""
    if not root.is_dir():
        return False
    fd = try_lock(root / AGENT_LOCK)
    if fd is None:
        return True
    os.close(fd)
    return False
