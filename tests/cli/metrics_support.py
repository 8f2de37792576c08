"""Helpers for the tests that scrape a real `konan monitor` / `konan worker` process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def clean_env(**konan: str) -> dict[str, str]:
    """This environment without any KONAN_ variable, plus `konan` (and PYTHONPATH kept, so the
    child imports this checkout's konan)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
    env.update(konan)
    return env


def scrape(port: int) -> str | None:
    """The text of http://127.0.0.1:port/metrics, or None while nothing answers there."""
    try:
        response = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0)
    except httpx2.TransportError:
        return None
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a scrape."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


@contextmanager
def konan_process(
    args: list[str], env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m konan <args>` with its output in `log`; SIGTERM (then SIGKILL) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "konan", *args],
            env=dict(env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_metrics(
    process: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60.0
) -> str:
    def _answer() -> str | None:
        if process.poll() is not None:
            raise AssertionError(f"the process stopped ({process.returncode}): {log.read_text()}")
        return scrape(port)

    text: str = wait_for(_answer, timeout, f"/metrics on port {port}")
    return text
