"""Knowing a process again after a restart, and signalling only the process we mean.

A PID alone is not an identity: after a replica exits its PID may be given to any other
process. We record the PID together with the process's start time (in clock ticks since boot,
``/proc/<pid>/stat`` field 22) and its argv; a signal goes out only while all three still match,
through a pidfd where the kernel has them, so the check and the signal name the same process.
Linux only (``/proc``); elsewhere nothing is recognised and nothing is signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_ticks: int
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "argv": list(self.argv)}

    @classmethod
    def from_json(cls, data: Any) -> ProcessIdentity | None:
        try:
            return cls(
                pid=int(data["pid"]),
                start_ticks=int(data["start_ticks"]),
                argv=tuple(str(a) for a in data["argv"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def identify(pid: int) -> ProcessIdentity | None:
    """The running process with this PID, or None when there is none (or only a zombie)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        raw_argv = (_PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields follow the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    argv = tuple(part.decode(errors="replace") for part in raw_argv.split(b"\0") if part)
    return ProcessIdentity(pid=pid, start_ticks=int(fields[19]), argv=argv)


def is_running(expected: ProcessIdentity) -> bool:
    """Whether the process ``expected`` names still runs (not merely its PID)."""
    current = identify(expected.pid)
    if current is None or current.start_ticks != expected.start_ticks:
        return False
    # argv reads empty for a moment while a process execs; the start time already pins it.
    return not current.argv or current.argv == expected.argv


def signal_process(expected: ProcessIdentity, sig: signal.Signals) -> bool:
    """Send ``sig`` if ``expected`` still runs; False when it has gone (nothing was sent)."""
    pidfd = None
    if hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(expected.pid)
    try:
        # With a pidfd open, the PID cannot be reused until we close it: check, then signal.
        if not is_running(expected):
            return False
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(expected.pid, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def find_processes(match: Callable[[tuple[str, ...]], bool]) -> list[ProcessIdentity]:
    """Every running process whose argv satisfies ``match``."""
    found: list[ProcessIdentity] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(_PROC):
            if not entry.name.isdigit():
                continue
            ident = identify(int(entry.name))
            if ident is not None and ident.argv and match(ident.argv):
                found.append(ident)
    return found
