"""The monitor: records travel from the stream into prediction_logs once, whatever happens."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest
import redis
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from konan.core.settings import Settings
from konan.db import heartbeats
from konan.db.engine import make_engine, make_session_factory, unit_of_work
from konan.monitoring.consumer import MonitorConsumer, run_monitor
from konan.monitoring.ingest import ingest
from konan.monitoring.spool import DEAD_DIR, SEALED_SUFFIX, SpoolLimits, SpoolWriter
from konan.monitoring.stream import (
    LogProducer,
    RedisStreamLogStream,
    SpoolLogStream,
    decode_record,
    encode_record,
    make_producer,
)

from ._support import TcpProxy, record, wait_for
from .conftest import REDIS_URL, Refs, running, stored


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def sealed(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob(f"*{SEALED_SUFFIX}"))


def produce(spool_dir: Path, refs: Refs, numbers: range) -> list[str]:
    """Log records the way a model server does (embedded mode) and wait until they are sealed."""
    with LogProducer(SpoolLogStream(spool_dir, SpoolLimits(max_segment_records=40))) as producer:
        for i in numbers:
            assert producer.submit(record(i, refs.deployment_id, refs.model_version_id))
        assert producer.flush()
    return [f"req-{i:06d}" for i in numbers]


def drain(consumer: MonitorConsumer) -> int:
    total = 0
    while handled := consumer.run_once():
        total += handled
    return total


@pytest.fixture
def consumer(
    monitor_settings: Settings, session_factory: sessionmaker[Session], spool_dir: Path
) -> Iterator[MonitorConsumer]:
    with SpoolLogStream(spool_dir) as stream:
        yield MonitorConsumer(monitor_settings, session_factory, stream, poll_timeout=0)


def test_records_written_through_the_spool_are_stored_exactly_once(
    spool_dir: Path, refs: Refs, consumer: MonitorConsumer, session_factory: sessionmaker[Session]
) -> None:
    expected = produce(spool_dir, refs, range(120))
    ingested_before = counter("konan_monitor_ingested_total")

    assert drain(consumer) == 120

    assert stored(session_factory) == [(r, "champion") for r in expected]
    assert sealed(spool_dir) == []
    assert counter("konan_monitor_ingested_total") - ingested_before == 120


def test_replaying_the_same_segments_stores_no_duplicates(
    spool_dir: Path,
    tmp_path: Path,
    refs: Refs,
    consumer: MonitorConsumer,
    session_factory: sessionmaker[Session],
) -> None:
    expected = produce(spool_dir, refs, range(90))
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in sealed(spool_dir):
        shutil.copy2(path, backup / path.name)
    drain(consumer)
    duplicates_before = counter("konan_monitor_duplicates_total")

    for path in backup.iterdir():  # the same segments arrive a second time
        shutil.copy2(path, spool_dir / path.name)
    assert drain(consumer) == 90

    assert stored(session_factory) == [(r, "champion") for r in expected]
    assert counter("konan_monitor_duplicates_total") - duplicates_before == 90
    assert sealed(spool_dir) == []


def test_a_crash_between_commit_and_delete_does_not_double(
    monitor_settings: Settings,
    spool_dir: Path,
    refs: Refs,
    session_factory: sessionmaker[Session],
) -> None:
    expected = produce(spool_dir, refs, range(30))
    # The monitor reads and commits, then dies before deleting the segment.
    with SpoolLogStream(spool_dir) as crashed:
        batch = crashed.read(100)
        with unit_of_work(session_factory) as session:
            ingest(session, [decode_record(e.payload) for e in batch.entries])
    assert len(sealed(spool_dir)) == 1

    with SpoolLogStream(spool_dir) as stream:  # the restarted monitor
        restarted = MonitorConsumer(monitor_settings, session_factory, stream, poll_timeout=0)
        assert drain(restarted) == 30

    assert stored(session_factory) == [(r, "champion") for r in expected]
    assert sealed(spool_dir) == []


def test_unknown_deployments_and_corrupt_lines_are_dead_lettered_and_the_rest_land(
    spool_dir: Path, refs: Refs, consumer: MonitorConsumer, session_factory: sessionmaker[Session]
) -> None:
    good = [record(i, refs.deployment_id) for i in range(3)]
    writer = SpoolWriter(spool_dir)
    writer.append(
        [
            encode_record(good[0]),
            encode_record(record(7, refs.deployment_id + 999)),
            b'{"request_id": "torn',
            encode_record(good[1]),
            b"[1, 2, 3]",
            encode_record(good[2]),
        ]
    )
    writer.close()
    corrupt_before = counter("konan_monitor_dead_lettered_total", reason="corrupt")
    unknown_before = counter("konan_monitor_dead_lettered_total", reason="unknown_deployment")

    assert drain(consumer) == 6

    assert [r for r, _ in stored(session_factory)] == [g["request_id"] for g in good]
    dead = consumer.stream.dead_letters()
    assert [d.reason.split(":")[0] for d in dead] == [
        "corrupt",
        "corrupt",
        "unknown_deployment",
    ]
    assert dead[0].payload == b'{"request_id": "torn'
    assert b"req-000007" in dead[2].payload
    assert len(list((spool_dir / DEAD_DIR).iterdir())) == 1
    assert sealed(spool_dir) == []
    assert counter("konan_monitor_dead_lettered_total", reason="corrupt") - corrupt_before == 2
    assert (
        counter("konan_monitor_dead_lettered_total", reason="unknown_deployment") - unknown_before
        == 1
    )


@dataclass
class Outage:
    """A database URL that does not answer until `restore()`."""

    url: str
    restore: Callable[[], None]


@pytest.fixture
def database_outage(db_url: str, engine: Engine, tmp_path: Path) -> Iterator[Outage]:
    if db_url.startswith("sqlite"):
        # The volume holding the database file is not mounted yet.
        current = Path(str(engine.url.database))
        volume = tmp_path / "volume"

        def mount() -> None:
            engine.dispose()
            volume.mkdir()
            for suffix in ("", "-wal", "-shm"):
                src = current.with_name(current.name + suffix)
                if src.exists():
                    src.rename(volume / src.name)

        yield Outage(f"sqlite:///{volume / current.name}", mount)
    else:
        # PostgreSQL behind a proxy whose port refuses connections until started.
        proxy = TcpProxy(make_url(db_url).port or 5432)
        url = make_url(db_url).set(host="127.0.0.1", port=proxy.port)
        try:
            yield Outage(url.render_as_string(hide_password=False), proxy.start)
        finally:
            proxy.stop()


def test_the_monitor_keeps_records_while_the_database_is_down_and_stores_them_after(
    monitor_settings: Settings,
    spool_dir: Path,
    refs: Refs,
    database_outage: Outage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    expected = produce(spool_dir, refs, range(60))
    segments = sealed(spool_dir)
    engine = make_engine(database_outage.url)
    factory = make_session_factory(engine)
    caplog.set_level(logging.WARNING, logger="konan.monitoring")
    try:
        with SpoolLogStream(spool_dir) as stream:
            consumer = MonitorConsumer(
                monitor_settings, factory, stream, retry_initial=0.05, retry_max=0.2
            )
            with running(consumer):
                wait_for(
                    lambda: sum("monitor waiting" in r.getMessage() for r in caplog.records) >= 3,
                    what="the monitor to retry against the unreachable database",
                )
                assert sealed(spool_dir) == segments  # nothing consumed, nothing lost

                database_outage.restore()
                wait_for(lambda: len(stored(factory)) == 60, what="the backlog to be stored")
                wait_for(lambda: sealed(spool_dir) == [], what="the segments to be deleted")
        assert stored(factory) == [(r, "champion") for r in expected]
    finally:
        engine.dispose()


def test_a_failed_store_while_the_next_batch_is_prepared_loses_and_doubles_nothing(
    monitor_settings: Settings,
    spool_dir: Path,
    refs: Refs,
    session_factory: sessionmaker[Session],
) -> None:
    # Batches of two 40-record segments (batch size 50); `run` reads batch n+1 while batch n
    # is being stored. The commit of the second batch fails once: neither it nor the batch
    # read past it may be acked, and both must be stored once after the retry.
    writer = SpoolWriter(spool_dir)
    for start in range(0, 200, 40):
        writer.append(
            [
                encode_record(record(i, refs.deployment_id, refs.model_version_id))
                for i in range(start, start + 40)
            ]
        )
        writer.seal()
    writer.close()
    assert len(sealed(spool_dir)) == 5
    expected = [f"req-{i:06d}" for i in range(200)]
    commits: list[str] = []

    def failing_once() -> Session:
        session = session_factory()
        commit = session.commit

        def commit_or_fail() -> None:
            if threading.current_thread().name.startswith("monitor-store"):
                commits.append("store")
                if len(commits) == 2:
                    raise sa.exc.OperationalError("COMMIT", None, Exception("connection lost"))
            commit()

        session.commit = commit_or_fail  # type: ignore[method-assign]
        return session

    factory = cast(sessionmaker[Session], failing_once)
    with SpoolLogStream(spool_dir) as stream:
        consumer = MonitorConsumer(
            monitor_settings, factory, stream, poll_timeout=0.05, retry_initial=0.05
        )
        with running(consumer):
            wait_for(lambda: len(stored(session_factory)) == 200, what="every record stored")
            wait_for(lambda: sealed(spool_dir) == [], what="the segments to be deleted")
    assert sorted(stored(session_factory)) == [(r, "champion") for r in expected]
    assert len(commits) >= 4  # three batches stored in the storer thread, one of them twice
    assert not (spool_dir / DEAD_DIR).exists() or not any((spool_dir / DEAD_DIR).iterdir())


def test_the_monitor_heartbeat_shows_while_it_runs_and_is_cleared_on_stop(
    monitor_settings: Settings, spool_dir: Path, session_factory: sessionmaker[Session]
) -> None:
    def alive() -> bool:
        with session_factory() as session:
            return heartbeats.alive(session, "monitor", timedelta(seconds=30))

    with SpoolLogStream(spool_dir) as stream:
        consumer = MonitorConsumer(monitor_settings, session_factory, stream, poll_timeout=0.05)
        with running(consumer):
            wait_for(alive, what="the monitor heartbeat")
    assert not alive()


def test_records_flow_through_redis_into_prediction_logs(
    monitor_settings: Settings,
    spool_dir: Path,
    refs: Refs,
    redis_stream: str,
    redis_client: redis.Redis,
    session_factory: sessionmaker[Session],
) -> None:
    target = RedisStreamLogStream(REDIS_URL, stream=redis_stream)
    with LogProducer(SpoolLogStream(spool_dir), target) as producer:
        for i in range(75):
            assert producer.submit(record(i, refs.deployment_id, role="canary"))
        assert producer.flush()
    redis_client.xadd(redis_stream, {b"r": b"garbage"})

    with RedisStreamLogStream(REDIS_URL, stream=redis_stream) as stream:
        consumer = MonitorConsumer(monitor_settings, session_factory, stream, poll_timeout=0)
        assert drain(consumer) == 76
        assert [d.reason.split(":")[0] for d in stream.dead_letters()] == ["corrupt"]

    assert stored(session_factory) == [(f"req-{i:06d}", "canary") for i in range(75)]
    assert redis_client.xlen(redis_stream) == 0
    assert redis_client.xpending(redis_stream, "monitor")["pending"] == 0


def test_run_monitor_builds_everything_from_settings(
    db_url: str, tmp_path: Path, refs: Refs, session_factory: sessionmaker[Session]
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        monitoring={"spool_dir": tmp_path / "spool"},
    )
    stop = threading.Event()
    thread = threading.Thread(target=run_monitor, args=(settings, stop), daemon=True)
    thread.start()
    try:
        with make_producer(settings) as producer:  # what a model server would do
            for i in range(10):
                assert producer.submit(record(i, refs.deployment_id))
        wait_for(lambda: len(stored(session_factory)) == 10, what="records stored by the monitor")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
