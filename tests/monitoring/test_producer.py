"""LogProducer: what a model server's logging does when Redis or the disk misbehaves."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import orjson
import redis
from prometheus_client import REGISTRY

from konan.monitoring.spool import SEALED_SUFFIX, SpoolLimits
from konan.monitoring.stream import LogProducer, RedisStreamLogStream, SpoolLogStream

from ._support import TcpProxy, free_port, record, wait_for
from .conftest import REDIS_URL


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def spooled_request_ids(spool_dir: Path) -> list[str]:
    ids: list[str] = []
    for path in sorted(spool_dir.glob(f"*{SEALED_SUFFIX}")):
        ids.extend(orjson.loads(line)["request_id"] for line in path.read_bytes().splitlines())
    return ids


def stream_request_ids(client: redis.Redis, stream: str) -> list[str]:
    return [orjson.loads(f[b"r"])["request_id"] for _, f in client.xrange(stream)]


def test_embedded_producer_writes_records_to_the_spool_in_order(spool_dir: Path) -> None:
    with LogProducer(SpoolLogStream(spool_dir, SpoolLimits(max_segment_records=7))) as producer:
        for i in range(20):
            assert producer.submit(record(i, 1))
        assert producer.flush()
        assert spooled_request_ids(spool_dir) == [f"req-{i:06d}" for i in range(20)]


def test_submit_does_not_wait_for_a_slow_store(spool_dir: Path) -> None:
    # Redis accepts the connection but never answers: the background thread waits, not submit.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        target = RedisStreamLogStream(f"redis://127.0.0.1:{port}", stream="x", socket_timeout=2)
        with LogProducer(SpoolLogStream(spool_dir), target) as producer:
            started = time.perf_counter()
            for i in range(1000):
                assert producer.submit(record(i, 1))
            elapsed = time.perf_counter() - started
            assert elapsed < 0.5, f"1000 submits took {elapsed:.3f}s"
            assert producer.flush(timeout=15)  # the thread gives up on Redis and spools
            assert len(spooled_request_ids(spool_dir)) == 1000


def test_producer_spools_while_redis_is_down_and_replays_in_order_when_it_is_back(
    spool_dir: Path, redis_stream: str, redis_client: redis.Redis
) -> None:
    redis_port = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(redis_port)  # not started: the port refuses connections
    target = RedisStreamLogStream(f"redis://127.0.0.1:{proxy.port}", stream=redis_stream)
    spooled_before = counter("konan_log_spooled_total")
    producer = LogProducer(SpoolLogStream(spool_dir), target, retry_max=0.2)
    try:
        for i in range(30):
            assert producer.submit(record(i, 1))
        assert producer.flush()
        assert spooled_request_ids(spool_dir) == [f"req-{i:06d}" for i in range(30)]
        assert counter("konan_log_spooled_total") - spooled_before == 30
        assert redis_client.xlen(redis_stream) == 0

        proxy.start()
        for i in range(30, 40):  # arrive while the replay is under way: they must come after
            assert producer.submit(record(i, 1))
        wait_for(
            lambda: redis_client.xlen(redis_stream) == 40, what="the spool replayed into Redis"
        )
        assert stream_request_ids(redis_client, redis_stream) == [f"req-{i:06d}" for i in range(40)]
        wait_for(lambda: spooled_request_ids(spool_dir) == [], what="replayed segments deleted")

        assert producer.submit(record(40, 1))
        wait_for(lambda: redis_client.xlen(redis_stream) == 41, what="direct writes resumed")
    finally:
        producer.close()
        proxy.stop()


def test_records_are_refused_not_dropped_when_nothing_can_store_them(spool_dir: Path) -> None:
    # Redis unreachable and a spool budget too small for even one batch: records wait in memory,
    # the queue fills, and submit says no (the caller can answer 503) instead of losing them.
    target = RedisStreamLogStream(f"redis://127.0.0.1:{free_port()}", stream="x")
    spool = SpoolLogStream(spool_dir, SpoolLimits(max_total_bytes=10))
    shed_before = counter("konan_log_shed_total", reason="queue_full")
    producer = LogProducer(spool, target, queue_size=5, batch_size=5, retry_max=0.05)
    try:
        accepted = [producer.submit(record(i, 1)) for i in range(50)]
        assert accepted[:5] == [True] * 5
        assert accepted.count(False) >= 40
        assert counter("konan_log_shed_total", reason="queue_full") - shed_before == (
            accepted.count(False)
        )
    finally:
        closed_before = counter("konan_log_shed_total", reason="closed")
        producer.close(timeout=0.5)
    # Closing with nowhere to write sheds what was held, and says so.
    assert counter("konan_log_shed_total", reason="closed") - closed_before == accepted.count(True)


def test_a_record_that_cannot_be_encoded_is_refused_at_submit(spool_dir: Path) -> None:
    before = counter("konan_log_shed_total", reason="unencodable")
    with LogProducer(SpoolLogStream(spool_dir)) as producer:
        bad = {**record(1, 1), "inputs": [{"x": object()}]}
        assert producer.submit(bad) is False  # type: ignore[arg-type]
    assert counter("konan_log_shed_total", reason="unencodable") - before == 1
