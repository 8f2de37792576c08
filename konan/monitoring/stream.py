"""The prediction-log stream: the record shape, the `LogStream` seam and its two adapters, and
the producer that model servers use on the predict path.

* `SpoolLogStream` (embedded default): the on-disk spool in ``settings.spool_dir``.
* `RedisStreamLogStream` (scale-out): a Redis stream with one consumer group.

Delivery is at least once everywhere: a record leaves a stream (segment deleted, entry acked)
only after the consumer committed it, and the consumer's insert is idempotent by
(request_id, role), so replays never double a row.

`LogProducer.submit` only encodes and enqueues; a background thread writes to the stream, falls
back to the local spool when Redis is unreachable, and replays the spool in order once it is back.

This module is imported by the data plane: no database, no control-plane imports, and redis is
imported only inside its adapter.
"""

from __future__ import annotations

import abc
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import orjson

from konan.core.errors import ConfigError, DependencyUnavailable
from konan.core.settings import Settings
from konan.monitoring import metrics
from konan.monitoring.spool import SpoolLimits, SpoolReader, SpoolUnavailable, SpoolWriter

if TYPE_CHECKING:
    import redis

log = logging.getLogger("konan.monitoring")

Role = Literal["champion", "canary", "shadow"]
ROLES: frozenset[str] = frozenset(("champion", "canary", "shadow"))

DEFAULT_STREAM = "konan:prediction-logs"
DEFAULT_GROUP = "monitor"


class PredictionRecord(TypedDict):
    """One served request as a model server logs it; the consumer validates it again."""

    request_id: str
    deployment_id: int
    model_version_id: int | None
    role: Role
    at: float  # epoch seconds
    inputs: list[dict[str, Any]]
    outputs: dict[str, Any]  # predictions, probabilities, ...
    latency_ms: float
    status_code: int
    error: str | None


def encode_record(record: PredictionRecord) -> bytes:
    """One JSON document, no newline. numpy arrays and scalars are serialised natively."""
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_record(payload: bytes) -> dict[str, Any]:
    """Parse one payload; raises ValueError when it is not a JSON object."""
    doc = orjson.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError(f"a record must be a JSON object, got {type(doc).__name__}")
    return doc


class LogStreamUnavailable(DependencyUnavailable):
    """The stream's backing store cannot be reached; nothing was lost, retry later."""

    code = "log_stream_unavailable"


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as read from a stream: an adapter-specific id and the encoded record."""

    id: str
    payload: bytes


@dataclass(frozen=True)
class Batch:
    entries: tuple[Entry, ...]
    # What `ack` removes: segment file names for the spool, entry ids for Redis.
    ack_keys: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.entries)


EMPTY_BATCH = Batch((), ())


@dataclass(frozen=True)
class DeadLetter:
    id: str
    reason: str
    payload: bytes


class LogStream(abc.ABC):
    """A durable, ordered log of encoded prediction records with at-least-once delivery.

    Producer side: `append`. Consumer side: `read` a batch, store it, then `ack` it; a batch read
    but not acked is read again (by this consumer, or by another once it is stale).
    """

    name: str

    @abc.abstractmethod
    def append(self, payloads: Sequence[bytes]) -> None:
        """Durably add records in order; raises LogStreamUnavailable / SpoolUnavailable."""

    def flush(self) -> None:
        """Make everything appended so far durable and visible to readers (default: it is)."""
        return None

    @abc.abstractmethod
    def read(self, max_records: int, timeout: float = 0.0, *, past: Sequence[Batch] = ()) -> Batch:
        """Up to about ``max_records`` unacked records, oldest first; waits up to ``timeout`` s.

        ``past``: batches read before and not acked yet because they are still being stored
        (the consumer's pipeline); their records are not read again. Without it, every unacked
        record is read again (after a failed store)."""

    @abc.abstractmethod
    def ack(self, batch: Batch) -> None:
        """Forget a batch whose records are committed elsewhere."""

    @abc.abstractmethod
    def dead_letter(self, items: Sequence[tuple[Entry, str]]) -> None:
        """Keep records that cannot be stored, with the reason, out of the main log."""

    @abc.abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters, for operators and tests."""

    @abc.abstractmethod
    def backlog(self) -> int:
        """Records waiting to be consumed (approximate)."""

    def durability_warning(self) -> str | None:
        """Why records in this stream would not survive a restart of its store, if they would
        not; the monitor logs it at start. None: durable, or cannot tell."""
        return None

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> LogStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---- embedded: the on-disk spool ------------------------------------------------------------


class SpoolLogStream(LogStream):
    """A spool folder as a stream. The writer half and the reader half open lazily, so a model
    server never takes the reader lock and the monitor never creates a segment."""

    def __init__(
        self, directory: Path, limits: SpoolLimits | None = None, *, poll_interval: float = 0.05
    ) -> None:
        self.directory = directory
        self.name = f"spool:{directory}"
        self.limits = limits or SpoolLimits()
        self._poll_interval = poll_interval
        self._writer: SpoolWriter | None = None
        self._reader: SpoolReader | None = None

    @property
    def writer(self) -> SpoolWriter:
        if self._writer is None:
            self._writer = SpoolWriter(self.directory, self.limits)
        return self._writer

    @property
    def reader(self) -> SpoolReader:
        if self._reader is None:
            self._reader = SpoolReader(self.directory)
        return self._reader

    def append(self, payloads: Sequence[bytes]) -> None:
        self.writer.append(payloads)

    def tick(self) -> None:
        if self._writer is not None:
            self._writer.tick()

    def flush(self) -> None:
        """Seal the open segment: fsync it and publish it to the reader."""
        if self._writer is not None:
            self._writer.seal()

    def read(self, max_records: int, timeout: float = 0.0, *, past: Sequence[Batch] = ()) -> Batch:
        deadline = time.monotonic() + timeout
        skip = {name for batch in past for name in batch.ack_keys}
        while True:
            segments = self.reader.read(max_records, skip)
            if segments or time.monotonic() >= deadline:
                break
            time.sleep(min(self._poll_interval, max(0.0, deadline - time.monotonic())))
        entries = tuple(
            Entry(f"{seg.name}:{i}", line)
            for seg in segments
            for i, line in enumerate(seg.lines, start=1)
        )
        return Batch(entries, tuple(seg.name for seg in segments))

    def ack(self, batch: Batch) -> None:
        self.reader.delete(batch.ack_keys)

    def dead_letter(self, items: Sequence[tuple[Entry, str]]) -> None:
        if items:
            self.reader.dead_letter(
                [(e.id.rsplit(":", 1)[0], e.id, e.payload, reason) for e, reason in items]
            )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return [
            DeadLetter(d["id"], d["reason"], d["payload"].encode())
            for d in self.reader.dead_letters(limit)
        ]

    def backlog(self) -> int:
        return self.reader.backlog_records()

    def close(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            if self._reader is not None:
                self._reader.close()


# ---- scale-out: a Redis stream ----------------------------------------------------------------


class RedisStreamLogStream(LogStream):
    """A Redis stream with one consumer group.

    Entries are never trimmed by MAXLEN (that would drop unconsumed records); an entry is XDELed
    right after its XACK, so the stream holds only what is unconsumed or in flight, and XLEN is
    the backlog. Entries pending on a consumer that died are taken over with XAUTOCLAIM once
    idle for ``claim_idle`` seconds. Only this group may read the stream.
    """

    FIELD = b"r"

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        claim_idle: float = 60.0,
        connect_timeout: float = 2.0,
        socket_timeout: float = 5.0,
    ) -> None:
        import redis  # here, not at the top: embedded processes never load the SDK

        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._response_error = redis.ResponseError
        self.name = stream
        self.stream = stream
        self.dead_stream = f"{stream}:dead"
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._claim_idle_ms = int(claim_idle * 1000)
        self._claim_every = max(0.5, claim_idle / 2)
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._group_ready = False
        self._socket_timeout = socket_timeout
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            health_check_interval=30,
        )

    def append(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for payload in payloads:
                pipe.xadd(self.stream, {self.FIELD: payload})
            pipe.execute()
        except self._errors as exc:
            # Part of the batch may have landed; the caller spools it all and the replay
            # doubles are removed by the idempotent insert.
            raise LogStreamUnavailable(f"redis stream {self.stream}: {exc}") from exc

    def read(self, max_records: int, timeout: float = 0.0, *, past: Sequence[Batch] = ()) -> Batch:
        # Our own pending entries are re-read from the start, or from after the last entry of
        # the batches still being stored (normally none: those batches are all we have pending).
        after = max((_id_key(k) for batch in past for k in batch.ack_keys), default=None)
        start = "0" if after is None else f"{after[0]}-{after[1]}"
        try:
            self._ensure_group()
            try:
                return self._read(max_records, timeout, start)
            except self._response_error as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream (or its group) was there and is gone: every record not yet
                # consumed went with it. Say so loudly; then start over on the new stream.
                metrics.STREAM_LOST.inc()
                log.error(
                    "the Redis stream %s or its consumer group %s disappeared: records not "
                    "yet consumed are lost. Was Redis restarted without persistence "
                    "(Konan needs appendonly yes), flushed, or the key deleted?",
                    self.stream,
                    self.group,
                )
                self._group_ready = False
                self._ensure_group()
                return self._read(max_records, timeout, "0")
        except self._errors as exc:
            raise LogStreamUnavailable(f"redis stream {self.stream}: {exc}") from exc

    def ack(self, batch: Batch) -> None:
        if not batch.ack_keys:
            return
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.xack(self.stream, self.group, *batch.ack_keys)
            pipe.xdel(self.stream, *batch.ack_keys)
            pipe.execute()
        except self._errors as exc:
            raise LogStreamUnavailable(f"redis stream {self.stream}: {exc}") from exc

    def dead_letter(self, items: Sequence[tuple[Entry, str]]) -> None:
        if not items:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for entry, reason in items:
                fields: dict[Any, Any] = {
                    self.FIELD: entry.payload,
                    b"reason": reason.encode(),
                    b"id": entry.id.encode(),
                }
                pipe.xadd(self.dead_stream, fields)
            pipe.execute()
        except self._errors as exc:
            raise LogStreamUnavailable(f"redis stream {self.dead_stream}: {exc}") from exc

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        try:
            rows: Any = self._client.xrange(self.dead_stream, count=limit)
        except self._errors as exc:
            raise LogStreamUnavailable(f"redis stream {self.dead_stream}: {exc}") from exc
        return [
            DeadLetter(
                fields[b"id"].decode(), fields[b"reason"].decode(), bytes(fields[self.FIELD])
            )
            for _id, fields in rows
        ]

    def backlog(self) -> int:
        try:
            return int(self._client.xlen(self.stream))  # type: ignore[arg-type]
        except self._errors as exc:
            raise LogStreamUnavailable(f"redis stream {self.stream}: {exc}") from exc

    def durability_warning(self) -> str | None:
        try:
            info: Any = self._client.info("persistence")
        except self._errors:
            return None  # unreachable or INFO refused (some managed services): cannot tell
        if str(info.get("aof_enabled", "1")) != "0":
            return None
        return (
            f"Redis keeps the stream {self.stream} without an append-only file "
            "(appendonly no): records not yet consumed are lost when Redis restarts, and a "
            "killed Redis loses everything since its last snapshot. Konan needs "
            "'appendonly yes' (appendfsync everysec or always) on this Redis."
        )

    def close(self) -> None:
        self._client.close()

    # ---- internals ------------------------------------------------------------------------

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # id=0: a group created after producers started still reads their records.
            self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except self._response_error as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _read(self, max_records: int, timeout: float, start: str) -> Batch:
        # 1. Our own pending entries after ``start``: read before but never acked (the store
        # failed, or the process that had our name died).
        rows: Any = self._client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=max_records
        )
        batch = self._batch(_stream_rows(rows))
        if batch.entries:
            return batch
        # 2. Entries stranded on consumers that died.
        if time.monotonic() >= self._next_claim:
            claimed: Any = self._client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self._claim_idle_ms,
                start_id=self._claim_cursor,
                count=max_records,
            )
            cursor = claimed[0].decode() if isinstance(claimed[0], bytes) else str(claimed[0])
            self._claim_cursor = cursor
            if cursor == "0-0":
                self._next_claim = time.monotonic() + self._claim_every
            batch = self._batch(claimed[1])
            if batch.entries:
                log.info("claimed %d stale entries of %s", len(batch.entries), self.stream)
                return batch
        # 3. New entries. BLOCK must stay below the socket timeout; BLOCK 0 would wait forever.
        block_ms = int(min(timeout, self._socket_timeout / 2) * 1000)
        rows = self._client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=max_records,
            block=block_ms if block_ms > 0 else None,
        )
        return self._batch(_stream_rows(rows))

    def _batch(self, rows: Any) -> Batch:
        entries: list[Entry] = []
        keys: list[str] = []
        for raw_id, fields in rows:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            keys.append(entry_id)
            # A deleted entry still pending shows up without fields: ack it, nothing to store.
            if fields:
                entries.append(Entry(entry_id, bytes(fields.get(self.FIELD, b""))))
        return Batch(tuple(entries), tuple(keys))


def _id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id ("<ms>-<seq>") as a pair that orders as Redis orders ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _stream_rows(reply: Any) -> Any:
    """The entries of a one-stream XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]


# ---- choosing the backend, once ----------------------------------------------------------------


def redis_url(settings: Settings) -> str | None:
    """The Redis URL the log stream uses in scale-out mode; None in embedded mode."""
    if settings.mode != "scale-out":
        return None
    url = settings.queue.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        raise ConfigError(
            "scale-out monitoring streams prediction logs through Redis: "
            "KONAN_QUEUE__BROKER_URL must be a redis:// or rediss:// URL"
        )
    return url


def make_log_stream(settings: Settings, *, stream: str = DEFAULT_STREAM) -> LogStream:
    """The stream the monitor consumes: Redis in scale-out mode, else the spool folder."""
    url = redis_url(settings)
    if url is not None:
        return RedisStreamLogStream(url, stream=stream)
    return SpoolLogStream(settings.spool_dir)


def make_producer(
    settings: Settings, *, stream: str = DEFAULT_STREAM, limits: SpoolLimits | None = None
) -> LogProducer:
    """What a model server logs through: Redis with a local spool behind it in scale-out mode,
    the spool alone in embedded mode (where the monitor reads the same folder)."""
    url = redis_url(settings)
    target = RedisStreamLogStream(url, stream=stream) if url is not None else None
    return LogProducer(SpoolLogStream(settings.spool_dir, limits), target)


# ---- the producer ------------------------------------------------------------------------------


class _Marker:
    """A flush or stop request travelling through the queue behind the records before it."""

    def __init__(self, stop: bool = False) -> None:
        self.stop = stop
        self.done = threading.Event()
        self.ok = False


class LogProducer:
    """Logs records from the predict path without waiting on any I/O.

    ``submit`` encodes the record and appends it to a bounded in-memory queue; it returns False
    (and counts the record as shed) when the queue is full, so the caller can answer 503 rather
    than 200 with a dropped record. The queue is a deque (appends and pops are atomic, no lock);
    the thread is woken once per batch, not per record, because the predict path pays for
    every lock and notify. A background thread writes batches to ``target`` (Redis)
    or, with no target or while the target is unreachable, to the spool. While spooled records
    wait, new ones are spooled behind them, and the spool is replayed into the target oldest
    first once it answers again, so per-producer order holds. A batch neither store accepts
    (disk full, spool over budget) stays in the thread and is retried; meanwhile the queue fills
    and further submits are refused.
    """

    def __init__(
        self,
        spool: SpoolLogStream,
        target: LogStream | None = None,
        *,
        queue_size: int = 10_000,
        batch_size: int = 5_000,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        replay_check_interval: float = 1.0,
        tick_interval: float = 0.05,
        linger: float = 0.05,
    ) -> None:
        self.spool = spool
        self.target = target
        self._queue: deque[bytes | _Marker] = deque()
        self._queue_size = queue_size
        self._wake = threading.Event()
        self._batch_size = batch_size
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._replay_check_interval = replay_check_interval
        self._tick_interval = tick_interval
        self._linger = linger
        self._closed = False
        self._abandon = threading.Event()
        self._target_backoff = 0.0
        self._target_retry_at = 0.0
        self._spool_backlog = target is not None  # a previous run may have left records
        self._next_replay_check = 0.0
        self._thread = threading.Thread(target=self._run, name="konan-log-producer", daemon=True)
        self._thread.start()

    def submit(self, record: PredictionRecord) -> bool:
        """Enqueue one record; never blocks. False means it was not accepted (counted as shed)."""
        if self._closed:
            metrics.SHED.labels("closed").inc()
            return False
        try:
            payload = encode_record(record)
        except (TypeError, orjson.JSONEncodeError):
            metrics.SHED.labels("unencodable").inc()
            return False
        queued = self._queue
        if len(queued) >= self._queue_size:
            metrics.SHED.labels("queue_full").inc()
            return False
        queued.append(payload)
        if not self._wake.is_set():  # the thread clears it before it looks at the queue
            self._wake.set()
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record submitted so far is in the target or in a sealed segment."""
        marker = _Marker()
        self._queue.append(marker)  # markers do not count against the queue's size
        self._wake.set()
        return marker.done.wait(timeout) and marker.ok

    @property
    def target_up(self) -> bool:
        return self.target is not None and self._target_backoff == 0.0

    def close(self, timeout: float = 10.0) -> None:
        """Write out what is queued (up to ``timeout``), seal the spool and stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.append(_Marker(stop=True))
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # The stores refuse: stop retrying and shed what is left (counted).
            self._abandon.set()
            self._thread.join()
        try:
            self.spool.close()
        finally:
            if self.target is not None:
                self.target.close()

    def __enter__(self) -> LogProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- the background thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            payloads, markers = self._take()
            if payloads and not self._deliver_until_done(payloads):
                metrics.SHED.labels("closed").inc(len(payloads))
            stop = False
            for marker in markers:
                marker.ok = self._seal_quietly()
                marker.done.set()
                stop = stop or marker.stop
            if stop:
                self._drain_after_stop()
                return
            self._housekeeping()

    def _take(self) -> tuple[list[bytes], list[_Marker]]:
        payloads: list[bytes] = []
        markers: list[_Marker] = []
        queued = self._queue
        self._wake.clear()  # before looking: a submit after this sets it again
        if not queued:
            self._wake.wait(self._tick_interval)
            if not queued:
                return payloads, markers
            if self._linger:
                # The first record after a quiet spell: let a batch gather behind it (as
                # Kafka's linger.ms), one write per 50 ms instead of a wake-up, a GIL hand-off
                # and a write per few records, which the predict path pays for (5 ms cost the
                # server 5-7 µs more CPU per request at 8,000 req/s than 50 ms). While records
                # keep coming the queue is never empty here, so there is no sleep and no cap on
                # the rate: batches follow each other.
                time.sleep(self._linger)
        while queued and len(payloads) < self._batch_size:
            item = queued.popleft()
            if isinstance(item, _Marker):
                markers.append(item)
                break  # everything before the marker is in this batch
            payloads.append(item)
        return payloads, markers

    def _deliver_until_done(self, payloads: list[bytes]) -> bool:
        delay = self._retry_initial
        while not self._try_deliver(payloads):
            if self._abandon.wait(delay):
                return False
            delay = min(delay * 2, self._retry_max)
            self._housekeeping()
        return True

    def _try_deliver(self, payloads: list[bytes]) -> bool:
        try:
            return self._deliver(payloads)
        except Exception:
            # A bug or an unexpected OS error must not kill the thread: hold the batch, retry.
            log.exception("prediction logs held in memory after an unexpected error")
            return False

    def _deliver(self, payloads: list[bytes]) -> bool:
        if self.target is not None and not self._spool_backlog and self._target_due():
            try:
                self.target.append(payloads)
            except LogStreamUnavailable as exc:
                self._target_down(exc)
            else:
                self._target_backoff = 0.0
                return True
        try:
            self.spool.append(payloads)
        except (SpoolUnavailable, OSError) as exc:
            log.warning("prediction logs held in memory: %s", exc)
            return False
        metrics.SPOOLED.inc(len(payloads))
        if self.target is not None:
            self._spool_backlog = True
        return True

    def _housekeeping(self) -> None:
        try:
            self.spool.tick()
            if self.target is not None:
                self._replay()
        except (SpoolUnavailable, OSError) as exc:
            log.warning("spool housekeeping failed, will retry: %s", exc)
        except Exception:
            log.exception("spool housekeeping failed, will retry")

    def _replay(self) -> None:
        if not self._target_due():
            return
        now = time.monotonic()
        if not self._spool_backlog and now < self._next_replay_check:
            return
        self._next_replay_check = now + self._replay_check_interval
        assert self.target is not None
        try:
            self.spool.flush()  # the open segment holds the newest spooled records
        except SpoolUnavailable as exc:
            log.warning("cannot seal spool segment for replay: %s", exc)
            return
        # A bounded number of batches per turn, so queued records keep flowing to the spool.
        for _ in range(10):
            batch = self.spool.read(self._batch_size)
            if not batch.entries:
                if not batch.ack_keys:
                    self._spool_backlog = False
                else:
                    self.spool.ack(batch)  # empty segments
                return
            try:
                self.target.append([e.payload for e in batch.entries])
            except LogStreamUnavailable as exc:
                self._target_down(exc)
                return
            self.spool.ack(batch)
            metrics.REPLAYED.inc(len(batch.entries))
            self._target_backoff = 0.0

    def _target_due(self) -> bool:
        return time.monotonic() >= self._target_retry_at

    def _target_down(self, exc: Exception) -> None:
        if self._target_backoff == 0.0:
            log.warning("log stream unreachable, spooling prediction logs locally: %s", exc)
        self._target_backoff = min(
            max(self._target_backoff * 2, self._retry_initial), self._retry_max
        )
        self._target_retry_at = time.monotonic() + self._target_backoff

    def _seal_quietly(self) -> bool:
        try:
            self.spool.flush()
        except SpoolUnavailable as exc:
            log.warning("cannot seal spool segment: %s", exc)
            return False
        return True

    def _drain_after_stop(self) -> None:
        # Only records a racing submit slipped in after the stop marker can be left.
        leftovers: list[bytes] = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Marker):
                item.ok = False
                item.done.set()
            else:
                leftovers.append(item)
        if leftovers and not self._deliver_until_done(leftovers):
            metrics.SHED.labels("closed").inc(len(leftovers))
        if not self._abandon.is_set():
            self._housekeeping()  # a last replay while the target answers
        self._seal_quietly()
