"""One contract, every LogStream adapter: the spool folder and the real Redis server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from konan.core.errors import ConfigError
from konan.core.settings import Settings
from konan.monitoring.spool import SpoolLimits
from konan.monitoring.stream import (
    LogStream,
    RedisStreamLogStream,
    SpoolLogStream,
    make_log_stream,
)

from .conftest import REDIS_URL


@pytest.fixture(params=["spool", "redis"])
def log_stream(request: pytest.FixtureRequest, spool_dir: Path) -> Iterator[LogStream]:
    stream: LogStream
    if request.param == "spool":
        stream = SpoolLogStream(spool_dir, SpoolLimits(max_segment_records=3))
    else:
        stream = RedisStreamLogStream(REDIS_URL, stream=request.getfixturevalue("redis_stream"))
    with stream:
        yield stream


def payloads(*numbers: int) -> list[bytes]:
    return [b'{"n": %d}' % n for n in numbers]


def test_appended_records_are_read_in_order_and_gone_once_acked(log_stream: LogStream) -> None:
    log_stream.append(payloads(1, 2))
    log_stream.append(payloads(3, 4, 5, 6, 7))
    log_stream.flush()
    assert log_stream.backlog() == 7

    seen: list[bytes] = []
    while batch := log_stream.read(100):
        seen.extend(e.payload for e in batch.entries)
        log_stream.ack(batch)
    assert seen == payloads(1, 2, 3, 4, 5, 6, 7)
    assert log_stream.backlog() == 0
    assert not log_stream.read(100, timeout=0.05)


def test_a_batch_read_but_not_acked_is_read_again(log_stream: LogStream) -> None:
    log_stream.append(payloads(1, 2, 3))
    log_stream.flush()

    first = log_stream.read(100)
    again = log_stream.read(100)  # the store failed: nothing was acked

    assert [e.payload for e in first.entries] == payloads(1, 2, 3)
    assert [e.id for e in again.entries] == [e.id for e in first.entries]
    log_stream.ack(again)
    assert not log_stream.read(100)


def test_a_batch_still_being_stored_is_read_past_until_a_read_without_it(
    log_stream: LogStream,
) -> None:
    log_stream.append(payloads(1, 2))
    log_stream.flush()
    log_stream.append(payloads(3, 4, 5))
    log_stream.flush()

    first = log_stream.read(2)
    second = log_stream.read(100, past=[first])  # the consumer is still storing `first`

    assert [e.payload for e in first.entries] == payloads(1, 2)
    assert [e.payload for e in second.entries] == payloads(3, 4, 5)
    assert not log_stream.read(100, past=[first, second])
    again = log_stream.read(100)  # storing failed: everything unacked comes again, in order
    assert [e.payload for e in again.entries] == payloads(1, 2, 3, 4, 5)
    log_stream.ack(again)
    assert not log_stream.read(100)


def test_dead_letters_keep_the_record_and_the_reason(log_stream: LogStream) -> None:
    log_stream.append([b'{"n": 1}', b"not json"])
    log_stream.flush()
    batch = log_stream.read(100)

    log_stream.dead_letter([(batch.entries[1], "corrupt: expected value")])
    log_stream.ack(batch)

    [dead] = log_stream.dead_letters()
    assert (dead.id, dead.reason, dead.payload) == (
        batch.entries[1].id,
        "corrupt: expected value",
        b"not json",
    )
    assert log_stream.backlog() == 0


def test_the_stream_is_chosen_once_from_settings(tmp_path: Path) -> None:
    embedded = Settings(data_dir=tmp_path)
    with make_log_stream(embedded) as stream:
        assert isinstance(stream, SpoolLogStream)
        assert stream.directory == embedded.spool_dir

    scale_out = {
        "mode": "scale-out",
        "data_dir": tmp_path,
        "database": {"url": "postgresql+psycopg://postgres@127.0.0.1/konan"},
        "artifacts": {"uri": "s3://bucket/konan"},
        "auth": {"secret_key": "s" * 32},
    }
    with make_log_stream(Settings(**scale_out, queue={"broker_url": REDIS_URL})) as stream:
        assert isinstance(stream, RedisStreamLogStream)

    with pytest.raises(ConfigError, match="KONAN_QUEUE__BROKER_URL"):
        make_log_stream(Settings(**scale_out, queue={"broker_url": "amqp://localhost"}))
