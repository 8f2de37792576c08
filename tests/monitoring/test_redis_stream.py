"""Redis specifics, against the real server: stale pending entries, a stream deleted underneath."""

from __future__ import annotations

import redis

from konan.monitoring.stream import RedisStreamLogStream

from ._support import wait_for
from .conftest import REDIS_URL


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


def test_reading_survives_the_stream_being_deleted(
    redis_stream: str, redis_client: redis.Redis
) -> None:
    with RedisStreamLogStream(REDIS_URL, stream=redis_stream) as stream:
        stream.append([b'{"n": 1}'])
        stream.ack(stream.read(10))
        redis_client.delete(redis_stream)  # group gone with it

        stream.append([b'{"n": 2}'])
        batch = stream.read(10)
        assert [e.payload for e in batch.entries] == [b'{"n": 2}']
