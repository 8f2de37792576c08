"""Processes, wrk runs, /proc readings and machine facts for the bench scripts (stdlib only,
plus orjson from the project venv)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
LUA_POST = BENCH / "lua" / "post.lua"
RESULTS = BENCH / "results"

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], *, timeout: float, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not met within {timeout} s: {condition}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_status(url: str, *, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return 0


def post_json(
    url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    req = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=orjson.dumps(body),
        headers={"content-type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def proc_status_kb(pid: int, field: str) -> int | None:
    """VmRSS / VmHWM of a process in KiB, from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *cmd]
    return list(cmd)


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_wrk(
    url: str,
    body_file: Path,
    *,
    auth: str | None,
    connections: int,
    duration: float,
    threads: int = 1,
    cpus: str | None = None,
    timeout_s: int = 5,
    script: Path = LUA_POST,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run in its own process; the Lua script prints a JSON summary."""
    env = {**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_AUTH": auth or ""}
    env.update(extra_env or {})
    cmd = pinned(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(duration))}s",
            "--timeout",
            f"{timeout_s}s",
            "-s",
            str(script),
            url,
        ],
        cpus,
    )
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    out = done.stdout
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            raw: dict[str, Any] = orjson.loads(line[len("WRK_JSON ") :])
            seconds = raw["duration_us"] / 1e6
            return {
                "requests": raw["requests"],
                "rps": raw["requests"] / seconds if seconds else 0.0,
                "p50_ms": raw["p50_us"] / 1000,
                "p90_ms": raw["p90_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "max_ms": raw["max_us"] / 1000,
                "non_2xx": raw["status"],
                "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
                "timeouts": raw["timeout"],
                "raw": raw,
            }
    raise RuntimeError(f"wrk printed no summary:\n{out}")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = proc_meminfo_kb("MemTotal")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def proc_meminfo_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def write_results(name: str, doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return path


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/*/stat), e.g. a server and its workers."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: split after the last ')'
        fields = text[text.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_kb(pid: int, field: str) -> int | None:
    """VmRSS / VmHWM summed over a process and its descendants (None once it is gone)."""
    values = [proc_status_kb(p, field) for p in descendants(pid)]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def exit_on_sigterm() -> None:
    """Turn SIGTERM (e.g. from `timeout`) into SystemExit, so `finally` blocks stop the servers
    a benchmark started instead of leaving them running."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
