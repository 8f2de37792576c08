"""An on-disk spool of prediction records: append-only JSON-lines segment files in one folder.

Layout of ``<spool_dir>``::

    <stem>.tmp                 a segment being created (ignored by readers)
    <stem>.open                the segment a live writer appends to (flock held by the writer)
    <stem>.n<count>.sealed     a complete segment: fsynced, renamed atomically, ready to read
    dead/<stem>.jsonl          dead letters: records the monitor could not store, with the reason
    .reader.lock               held by the one reader (monitor or replaying producer) of the folder

``<stem>`` starts with a zero-padded nanosecond timestamp, so sorting names sorts segments by
creation time; a writer's own segments are strictly ordered.

A writer seals its segment (fsync, atomic rename, fsync of the folder) when it holds N records or
B bytes, when it is M seconds old (`SpoolWriter.tick`) and on close. A reader sees only sealed
segments and deletes one only after its records are committed elsewhere, so a crash at any point
replays records instead of losing them; the consumer's idempotent insert removes the doubles.

A writer killed mid-segment leaves a ``.open`` file whose flock died with it; the reader seals
such orphans (a torn last line becomes a corrupt record for the dead-letter path).

Neither class is thread-safe: each is driven by one thread (the producer's or the monitor's).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from konan.core.errors import DependencyUnavailable
from konan.monitoring import metrics

log = logging.getLogger("konan.monitoring")

TMP_SUFFIX = ".tmp"
OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".sealed"
DEAD_DIR = "dead"
READER_LOCK = ".reader.lock"


class SpoolUnavailable(DependencyUnavailable):
    """The spool cannot take records now (disk error); the caller keeps them and retries."""

    code = "spool_unavailable"


class SpoolFull(SpoolUnavailable):
    """Taking these records would push the spool past its byte budget."""

    code = "spool_full"


@dataclass(frozen=True)
class SpoolLimits:
    """When a writer seals its segment, and how many bytes the whole folder may hold."""

    max_segment_records: int = 1000
    max_segment_bytes: int = 4 * 1024 * 1024
    max_segment_age: float = 0.5  # seconds: bounds how long a record waits to become readable
    max_total_bytes: int = 1024**3


@dataclass(frozen=True)
class Segment:
    """A sealed segment as read: its file name and its non-empty lines, in order."""

    name: str
    lines: list[bytes]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sealed_count(name: str) -> int:
    """The record count a writer put into a sealed name (``<stem>.n<count>.sealed``)."""
    try:
        return int(name[: -len(SEALED_SUFFIX)].rsplit(".n", 1)[1])
    except (IndexError, ValueError):
        return 0


def _stem(name: str) -> str:
    for suffix in (SEALED_SUFFIX, OPEN_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.rsplit(".n", 1)[0]


def ensure_spool_dir(directory: Path) -> None:
    # Owner-only: the spool holds model inputs, which may be personal data.
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / DEAD_DIR).mkdir(mode=0o700, exist_ok=True)


def spool_bytes(directory: Path) -> int:
    """Bytes held in open and sealed segments (dead letters are not counted)."""
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as it:
        for entry in it:
            if entry.name.endswith((OPEN_SUFFIX, SEALED_SUFFIX)):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
    return total


class SpoolWriter:
    """Appends batches of encoded records (one JSON document per line) to its open segment."""

    def __init__(self, directory: Path, limits: SpoolLimits | None = None) -> None:
        self.directory = directory
        self.limits = limits or SpoolLimits()
        ensure_spool_dir(directory)
        self._pid = os.getpid()
        self._tag = os.urandom(3).hex()  # two hosts may share a folder and a pid
        self._seq = 0
        self._last_ns = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._records = 0
        self._bytes = 0
        self._measured = spool_bytes(directory)
        metrics.SPOOL_BYTES.set(self._measured)

    @property
    def open_records(self) -> int:
        return self._records

    def append(self, lines: Sequence[bytes]) -> None:
        """Write every line or none of them; raises SpoolFull or SpoolUnavailable."""
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        if self._measured + len(data) > self.limits.max_total_bytes:
            # The estimate only grows between scans; the reader may have freed space since.
            self._measured = spool_bytes(self.directory)
            metrics.SPOOL_BYTES.set(self._measured)
            if self._measured + len(data) > self.limits.max_total_bytes:
                raise SpoolFull(
                    f"spool {self.directory} holds {self._measured} bytes; its budget is "
                    f"{self.limits.max_total_bytes}"
                )
        try:
            fd = self._open_segment()
            self._write_all(fd, data)
        except OSError as exc:
            raise SpoolUnavailable(f"cannot write to spool {self.directory}: {exc}") from exc
        self._records += len(lines)
        self._bytes += len(data)
        self._measured += len(data)
        if (
            self._records >= self.limits.max_segment_records
            or self._bytes >= self.limits.max_segment_bytes
        ):
            self.seal()

    def tick(self) -> None:
        """Seal the open segment once it is old enough; call this every so often."""
        if (
            self._fd is not None
            and time.monotonic() - self._opened_at >= self.limits.max_segment_age
        ):
            self.seal()

    def seal(self) -> None:
        """fsync the open segment and publish it to readers with an atomic rename."""
        if self._fd is None or self._path is None:
            return
        if self._records == 0:
            self._discard_open()
            return
        fd, path = self._fd, self._path
        sealed = path.with_name(f"{_stem(path.name)}.n{self._records}{SEALED_SUFFIX}")
        try:
            os.fsync(fd)
            os.rename(path, sealed)
            _fsync_dir(self.directory)
        except OSError as exc:
            # The segment stays open (and locked); the next tick or close tries again.
            raise SpoolUnavailable(f"cannot seal spool segment {path}: {exc}") from exc
        os.close(fd)  # releases the flock
        self._fd = self._path = None
        self._records = self._bytes = 0
        self._measured = spool_bytes(self.directory)
        metrics.SPOOL_BYTES.set(self._measured)

    def close(self) -> None:
        try:
            self.seal()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # ---- internals ------------------------------------------------------------------------

    def _open_segment(self) -> int:
        if self._fd is not None:
            return self._fd
        self._seq += 1
        # Strictly increasing per writer, even if the wall clock steps back: names sort in order.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        stem = f"{self._last_ns:020d}-{self._pid}-{self._tag}-{self._seq:06d}"
        tmp = self.directory / (stem + TMP_SUFFIX)
        path = self.directory / (stem + OPEN_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            # Lock before the file is visible as .open, so a reader never mistakes it for an orphan.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fd, self._path = fd, path
        self._opened_at = time.monotonic()
        return fd

    def _write_all(self, fd: int, data: bytes) -> None:
        start = os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError:
            # Disk full mid-batch: cut the torn tail so the segment holds whole lines only.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise

    def _discard_open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        self._fd = self._path = None
        self._records = self._bytes = 0


class SpoolReader:
    """Reads sealed segments oldest first; deletes them when told their records are safe.

    Only one reader works a folder at a time (an flock on ``.reader.lock``); a second one
    stands by and reads nothing until the first goes away.
    """

    def __init__(self, directory: Path, *, orphan_check_interval: float = 2.0) -> None:
        self.directory = directory
        ensure_spool_dir(directory)
        self._lock_fd: int | None = None
        self._orphan_check_interval = orphan_check_interval
        self._next_orphan_check = 0.0

    def read(self, max_records: int, skip: Collection[str] = ()) -> list[Segment]:
        """Whole sealed segments, oldest first, up to ``max_records`` lines (at least one);
        segments named in ``skip`` (read before, not yet deleted) are passed over."""
        if not self._acquire():
            return []
        if time.monotonic() >= self._next_orphan_check:
            self.recover_orphans()
            self._next_orphan_check = time.monotonic() + self._orphan_check_interval
        out: list[Segment] = []
        total = 0
        for name in self._sealed_names():
            if name in skip:
                continue
            try:
                data = (self.directory / name).read_bytes()
            except FileNotFoundError:
                continue
            lines = [line for line in data.split(b"\n") if line.strip()]
            out.append(Segment(name, lines))
            total += len(lines)
            if total >= max_records:
                break
        return out

    def delete(self, names: Sequence[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)

    def dead_letter(self, items: Sequence[tuple[str, str, bytes, str]]) -> None:
        """Append (segment, entry id, payload, reason) to ``dead/<stem>.jsonl`` and fsync."""
        by_stem: dict[str, list[bytes]] = {}
        for segment, entry_id, payload, reason in items:
            doc = {
                "id": entry_id,
                "reason": reason,
                "payload": payload.decode("utf-8", "backslashreplace"),
            }
            by_stem.setdefault(_stem(segment), []).append(orjson.dumps(doc) + b"\n")
        dead = self.directory / DEAD_DIR
        for stem, lines in by_stem.items():
            fd = os.open(dead / f"{stem}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)

    def dead_letters(self, limit: int) -> Iterator[dict[str, str]]:
        dead = self.directory / DEAD_DIR
        count = 0
        for path in sorted(dead.glob("*.jsonl")):
            for line in path.read_bytes().splitlines():
                if count >= limit:
                    return
                doc = orjson.loads(line)
                yield {"id": doc["id"], "reason": doc["reason"], "payload": doc["payload"]}
                count += 1

    def backlog_records(self) -> int:
        return sum(_sealed_count(name) for name in self._sealed_names())

    def recover_orphans(self) -> int:
        """Seal ``.open`` segments whose writer died (their flock is free). Returns how many."""
        recovered = 0
        with os.scandir(self.directory) as it:
            names = sorted(e.name for e in it if e.name.endswith(OPEN_SUFFIX))
        for name in names:
            if self._seal_orphan(self.directory / name):
                recovered += 1
        return recovered

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- internals ------------------------------------------------------------------------

    def _acquire(self) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(self.directory / READER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _sealed_names(self) -> list[str]:
        with os.scandir(self.directory) as it:
            return sorted(e.name for e in it if e.name.endswith(SEALED_SUFFIX))

    def _seal_orphan(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its writer is alive
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    return False  # sealed by its writer between our open and our lock
            except FileNotFoundError:
                return False
            size = os.fstat(fd).st_size
            if size == 0:
                os.unlink(path)
                return False
            data = os.pread(fd, size, 0)
            count = sum(1 for line in data.split(b"\n") if line.strip())
            os.fsync(fd)
            sealed = path.with_name(f"{_stem(path.name)}.n{count}{SEALED_SUFFIX}")
            os.rename(path, sealed)
            _fsync_dir(self.directory)
            log.warning("sealed orphaned spool segment %s (%d records)", sealed.name, count)
            return True
        finally:
            os.close(fd)
