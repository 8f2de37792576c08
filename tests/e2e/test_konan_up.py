"""`konan up` on a fresh data dir: the whole platform on one machine, as a newcomer runs it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

import konan


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        match = re.search(r"^PPid:\s+(\d+)$", status, re.M)
        if match and int(match.group(1)) == pid:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


class Up:
    def __init__(self, data_dir: Path, admin_password: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"up-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["COLUMNS"] = "200"
        if admin_password:
            env["KONAN_ADMIN_PASSWORD"] = admin_password
        self.started = time.monotonic()
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "konan",
                "up",
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, path: str, status: int, timeout: float) -> float:
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"konan up exited early:\n{self.output()}"
            try:
                if httpx2.get(self.url + path, timeout=1).status_code == status:
                    return time.monotonic() - self.started
            except httpx2.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{path} did not answer {status} within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "konan-data"


@pytest.fixture
def running(data_dir: Path) -> Iterator[Up]:
    up = Up(data_dir)
    try:
        yield up
    finally:
        up.stop()


def test_up_serves_health_within_20s_then_ready_and_prints_a_one_time_password(
    running: Up, data_dir: Path
) -> None:
    took = running.wait_for("/healthz", 200, timeout=20)
    assert took < 20
    running.wait_for("/readyz", 200, timeout=60)
    out = running.output()
    assert running.url in out
    match = re.search(r"user admin, password (\S+)", out)
    assert match, out
    with konan.Client(running.url) as client:
        client.login("admin", match.group(1))
        assert client.me()["is_admin"] is True
    # The generated password is never stored in clear.
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert match.group(1).encode() not in path.read_bytes(), path


def test_ctrl_c_stops_every_process_it_started(running: Up) -> None:
    running.wait_for("/readyz", 200, timeout=60)
    kids = children_of(running.proc.pid)
    assert len(kids) >= 3, kids  # server, worker, monitor
    running.stop()
    assert running.proc.returncode == 0, running.output()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in kids):
        time.sleep(0.2)
    assert not [pid for pid in kids if alive(pid)]
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(running.url + "/healthz", timeout=1)


def test_a_second_start_keeps_the_admin_and_prints_no_password(data_dir: Path) -> None:
    first = Up(data_dir, admin_password="chosen-by-the-operator")
    try:
        first.wait_for("/healthz", 200, timeout=60)
        # The operator chose the password: nothing to show, and it is never echoed.
        assert "admin account created" not in first.output()
        assert "chosen-by-the-operator" not in first.output()
    finally:
        first.stop()
    second = Up(data_dir)
    try:
        second.wait_for("/healthz", 200, timeout=60)
        assert "admin account created" not in second.output()
        with konan.Client(second.url) as client:
            client.login("admin", "chosen-by-the-operator")
    finally:
        second.stop()
