"""Redis specifics, against the real server: stale pending entries, a stream deleted underneath,
and the persistence warning (against private redis-servers)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from konan.core.settings import Settings
from konan.monitoring import metrics
from konan.monitoring.consumer import MonitorConsumer
from konan.monitoring.stream import RedisStreamLogStream
from tests.e2e.test_konan_up import free_port

from ._support import wait_for
from .conftest import REDIS_URL, running


def test_entries_pending_on_a_dead_consumer_are_claimed_by_another(
    redis_stream: str, redis_client: redis.Redis
) -> None:
    dead = RedisStreamLogStream(REDIS_URL, stream=redis_stream, consumer="dead", claim_idle=0.05)
    alive = RedisStreamLogStream(REDIS_URL, stream=redis_stream, consumer="alive", claim_idle=0.05)
    try:
        dead.append([b'{"n": 1}', b'{"n": 2}'])
        taken = dead.read(10)
        assert len(taken) == 2
        dead.close()  # it dies without acking

        claimed = wait_for(lambda: alive.read(10, timeout=0.05), what="a claim of stale entries")
        assert [e.id for e in claimed.entries] == [e.id for e in taken.entries]
        alive.ack(claimed)

        assert redis_client.xpending(redis_stream, "monitor")["pending"] == 0
        assert redis_client.xlen(redis_stream) == 0
    finally:
        dead.close()
        alive.close()


def test_reading_survives_the_stream_being_deleted_and_says_records_were_lost(
    redis_stream: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisStreamLogStream(REDIS_URL, stream=redis_stream) as stream:
        stream.append([b'{"n": 1}'])
        stream.ack(stream.read(10))
        lost_before = metrics.STREAM_LOST._value.get()
        redis_client.delete(redis_stream)  # group gone with it, as on a restart without AOF

        stream.append([b'{"n": 2}'])
        with caplog.at_level(logging.ERROR, logger="konan.monitoring"):
            batch = stream.read(10)
        assert [e.payload for e in batch.entries] == [b'{"n": 2}']
        assert metrics.STREAM_LOST._value.get() == lost_before + 1
        assert any("appendonly yes" in r.getMessage() for r in caplog.records), caplog.text
        # Only once: the new group is ready.
        stream.ack(batch)
        stream.append([b'{"n": 3}'])
        assert len(stream.read(10)) == 1
        assert metrics.STREAM_LOST._value.get() == lost_before + 1


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Starts a private redis-server with the given persistence; kills them all afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("the redis-server binary is not installed")
    started: list[subprocess.Popen[bytes]] = []

    def start(appendonly: str) -> str:
        port = free_port()
        folder = tmp_path / f"redis-{port}"
        folder.mkdir()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        argv += ["--appendonly", appendonly, "--save", ""]
        started.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        url = f"redis://127.0.0.1:{port}/0"
        with redis.Redis.from_url(url) as client:
            wait_for(lambda: _pings(client), what="the private redis-server")
        return url

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_a_redis_without_an_append_only_file_is_reported(
    redis_server: Callable[[str], str],
) -> None:
    start = redis_server
    with RedisStreamLogStream(start("no")) as stream:
        warning = stream.durability_warning()
    assert warning is not None
    assert "appendonly yes" in warning
    with RedisStreamLogStream(start("yes")) as stream:
        assert stream.durability_warning() is None
    # Unreachable: nothing can be told, and nothing is raised.
    with RedisStreamLogStream(f"redis://127.0.0.1:{free_port()}/0") as stream:
        assert stream.durability_warning() is None


def test_the_monitor_warns_at_start_when_redis_has_no_append_only_file(
    redis_server: Callable[[str], str],
    monitor_settings: Settings,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with RedisStreamLogStream(redis_server("no")) as stream:
        consumer = MonitorConsumer(monitor_settings, session_factory, stream, poll_timeout=0.05)
        with caplog.at_level(logging.WARNING, logger="konan.monitoring"), running(consumer):
            wait_for(lambda: "appendonly yes" in caplog.text, what="the persistence warning")
