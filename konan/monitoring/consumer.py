"""The monitor process: moves prediction records from the log stream into prediction_logs.

Per batch: read it, decode and validate it, store it in one unit of work, then dead-letter what
could not be stored and ack the batch. `run` overlaps two batches (the next one is read and
validated while the previous one is stored by a thread of its own); a batch is still acked only
after its transaction committed, in order, so a crash or an outage at any point leaves the
records in the stream to be read again; the idempotent insert turns the replay into duplicates
that are skipped, never into double rows.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from konan.core.errors import DependencyUnavailable
from konan.core.settings import Settings
from konan.db import heartbeats, migrate
from konan.db.engine import make_engine, make_session_factory, unit_of_work
from konan.monitoring import metrics
from konan.monitoring.ingest import IngestResult, Prepared, prepare, store
from konan.monitoring.stream import Batch, Entry, LogStream, decode_record, make_log_stream

log = logging.getLogger("konan.monitoring")

COMPONENT = "monitor"
CORRUPT = "corrupt"
# Outages we expect and wait out quietly; anything else is logged with its traceback (and
# still retried: the records are safe in the stream, and a restart would not help more).
_TRANSIENT = (sa.exc.OperationalError, sa.exc.InterfaceError, DependencyUnavailable)


class MonitorConsumer:
    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        stream: LogStream,
        *,
        heartbeat_interval: float = 5.0,
        poll_timeout: float = 0.5,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        instance: str | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.stream = stream
        self.batch_size = settings.monitoring.ingest_batch_size
        self.heartbeat_interval = heartbeat_interval
        self.poll_timeout = poll_timeout
        self.instance = instance or heartbeats.instance_name()
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._next_beat = 0.0
        self._in_flight: tuple[_Work, Future[IngestResult]] | None = None

    def run_once(self) -> int:
        """Handle one batch: returns how many records were stored, skipped or dead-lettered.

        Raises when the database or the stream is unreachable; nothing is acked then.
        """
        self._beat_if_due()
        batch = self.stream.read(self.batch_size, timeout=self.poll_timeout)
        if not batch.ack_keys:
            return 0
        work = self._prepare(batch)
        self._finish(work, self._store(work))
        return len(batch.entries)

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, waiting out outages with jittered exponential back-off."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Exception),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self._retry_initial, jitter=self._retry_initial, max=self._retry_max
            ),
            stop=tenacity.stop_when_event_set(stop),
            sleep=lambda seconds: _wait(stop, seconds),
            before_sleep=_log_retry,
            reraise=True,
        )
        log.info("monitor %s consuming %s", self.instance, self.stream.name)
        warning = self.stream.durability_warning()
        if warning:
            log.warning("%s", warning)
        storer = ThreadPoolExecutor(1, thread_name_prefix="monitor-store")
        try:
            while not stop.is_set():
                try:
                    for attempt in retrying:
                        with attempt:
                            if not stop.is_set():  # no extra try after a back-off cut short
                                self._step(storer)
                except Exception:
                    if not stop.is_set():
                        raise
            try:
                self._settle(ack=True)
            except Exception as exc:
                log.warning(
                    "monitor stopped before its last batch was stored (it will be read again): %s",
                    _first_line(exc),
                )
        finally:
            self._settle(ack=False)  # only after an error: its batch is read again next time
            storer.shutdown(wait=True)
            self._forget()
            log.info("monitor %s stopped", self.instance)

    # ---- the pipeline -----------------------------------------------------------------------
    #
    # `run` overlaps two batches: while the storer thread writes batch n (COPY, rollups,
    # commit: mostly waiting on the database, with the GIL released), this thread reads,
    # decodes and validates batch n+1. Batch n+1 is read past batch n (`read(past=…)`), which
    # is still unacked. Batches are acked one at a time, in order, each only after its own
    # commit; if storing fails, neither batch is acked and the next read (without `past`)
    # starts again from the oldest unacked record: a replay, which yields only duplicates.

    def _step(self, storer: ThreadPoolExecutor) -> None:
        past = (self._in_flight[0].batch,) if self._in_flight else ()
        # While a batch is being stored, only take what is already there: a blocking read
        # would hold back that batch's ack (and the lag) for the poll timeout.
        timeout = 0.0 if self._in_flight else self.poll_timeout
        batch = self.stream.read(self.batch_size, timeout=timeout, past=past)
        work = self._prepare(batch) if batch.ack_keys else None
        if self._in_flight:
            self._settle(ack=True)
        if work is not None:
            self._in_flight = (work, storer.submit(self._store, work))
        else:
            self._beat_if_due()  # idle: between batches, never beside a store

    def _settle(self, *, ack: bool) -> None:
        """Wait for the batch being stored; with ``ack``, dead-letter and ack it (raises if its
        store failed). Without, just let it end: nothing is acked, it will be read again."""
        if self._in_flight is None:
            return
        work, future = self._in_flight
        self._in_flight = None
        if not ack:
            with contextlib.suppress(Exception):
                future.result()
            return
        self._finish(work, future.result())
        self._beat_if_due()

    def _prepare(self, batch: Batch) -> _Work:
        records, corrupt = _decode(batch)
        return _Work(batch, records, corrupt, prepare([record for _, record in records]))

    def _store(self, work: _Work) -> IngestResult:
        with unit_of_work(self.session_factory) as session:
            return store(session, work.prepared, chunk_size=self.batch_size)

    def _finish(self, work: _Work, result: IngestResult) -> None:
        dead = work.corrupt + [
            (work.records[r.index][0], r.reason, f"{r.reason}: {r.detail}") for r in result.rejected
        ]
        # After the commit: a crash here replays the batch, which now only yields duplicates.
        self.stream.dead_letter([(entry, detail) for entry, _, detail in dead])
        self.stream.ack(work.batch)
        self._account(result, dead)

    # ---- internals ------------------------------------------------------------------------

    def _beat_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_beat:
            return
        with unit_of_work(self.session_factory) as session:
            heartbeats.beat(session, COMPONENT, self.instance)
        self._next_beat = now + self.heartbeat_interval
        with contextlib.suppress(DependencyUnavailable):  # the next read reports an outage
            metrics.BACKLOG.set(self.stream.backlog())

    def _forget(self) -> None:
        try:
            with unit_of_work(self.session_factory) as session:
                heartbeats.forget(session, COMPONENT, self.instance)
        except sa.exc.SQLAlchemyError as exc:
            # Stopping while the database is down: the row simply ages out of /readyz.
            log.warning("could not clear the monitor heartbeat: %s", _first_line(exc))

    def _account(self, result: IngestResult, dead: Sequence[tuple[Entry, str, str]]) -> None:
        metrics.INGESTED.inc(result.inserted)
        metrics.DUPLICATES.inc(result.duplicates)
        for _, reason, _ in dead:
            metrics.DEAD_LETTERED.labels(reason).inc()
        if result.oldest_at is not None:
            metrics.LAG_SECONDS.set(max(0.0, time.time() - result.oldest_at))
        if dead:
            log.warning("dead-lettered %d prediction records, first: %s", len(dead), dead[0][2])


@dataclass
class _Work:
    """One batch on its way through the consumer."""

    batch: Batch
    records: list[tuple[Entry, Any]]  # decoded, in the order given to `prepare`
    corrupt: list[tuple[Entry, str, str]]  # (entry, reason, detail): not JSON objects
    prepared: Prepared


def _decode(batch: Batch) -> tuple[list[tuple[Entry, Any]], list[tuple[Entry, str, str]]]:
    records: list[tuple[Entry, Any]] = []
    corrupt: list[tuple[Entry, str, str]] = []
    for entry in batch.entries:
        try:
            records.append((entry, decode_record(entry.payload)))
        except (ValueError, orjson.JSONDecodeError) as exc:
            corrupt.append((entry, CORRUPT, f"{CORRUPT}: {exc}"))
    return records, corrupt


def _wait(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    delay = state.upcoming_sleep
    if exc is None:
        return
    if isinstance(exc, _TRANSIENT):
        log.warning(
            "monitor waiting %.1fs (attempt %d): %s: %s",
            delay,
            state.attempt_number,
            type(exc).__name__,
            _first_line(exc),
        )
    else:
        log.error("monitor failed; retrying in %.1fs", delay, exc_info=exc)


def _wait_for_schema(engine: Engine, stop: threading.Event) -> bool:
    """Check the schema is current, waiting while the database is down. False if stopped."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(_TRANSIENT),
        wait=tenacity.wait_exponential_jitter(multiplier=0.2, jitter=0.2, max=10.0),
        stop=tenacity.stop_when_event_set(stop),
        sleep=lambda seconds: _wait(stop, seconds),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                migrate.ensure_current(engine)
    except _TRANSIENT:
        if stop.is_set():
            return False
        raise
    return True


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for the monitor process.

    A batch allocates tens of thousands of containers (decoded records, rows, parameters) that
    live until it is stored, so with the default thresholds the collector runs dozens of times
    per batch, and each older-generation pass walks every object the process holds (SQLAlchemy,
    numpy, the settings...). That was more than half of the time spent decoding a record.
    Freezing what exists after start-up moves it out of every later pass, and a larger first
    threshold collects once per few batches instead; the loop makes little cyclic garbage.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, 20, 20)


_GC_THRESHOLD = 100_000  # allocations of containers between young collections (default 700)


def run_monitor(settings: Settings, stop: threading.Event) -> None:
    """`konan monitor`: build the engine and the stream from settings and consume until stopped."""
    engine = make_engine(settings.database_url, settings)
    tune_gc()
    try:
        if not _wait_for_schema(engine, stop):
            return
        stream = make_log_stream(settings)
        try:
            MonitorConsumer(settings, make_session_factory(engine), stream).run(stop)
        finally:
            stream.close()
    finally:
        engine.dispose()
