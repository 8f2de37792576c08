"""The ArtifactStore seam: content-addressed blobs (model files, datasets) keyed by sha256.

Adapters: ``LocalArtifactStore`` (a folder) and ``S3ArtifactStore`` (any S3-compatible server).
Both store an object under ``sha256/<d[0:2]>/<d[2:4]>/<digest>`` below their root or prefix, so
identical bytes are stored once and a digest is all a caller needs to find them again.
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from konan.core.errors import InvalidInput, PayloadTooLarge

CHUNK_SIZE = 1024 * 1024
"""Bytes read from a stream at a time; bounds the memory a put or a hash check uses."""

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    sha256: str
    size: int


def validate_sha256(value: object) -> str:
    """Return ``value`` if it is a sha256 hex digest (64 lowercase hex chars), else InvalidInput.

    Every store method calls this before building a path or key, which is what keeps a caller
    from reaching outside the store's root (``../``, absolute paths, separators).
    """
    if not isinstance(value, str) or _SHA256_RE.fullmatch(value) is None:
        shown = repr(value)[:80]
        raise InvalidInput(f"not a sha256 digest (64 lowercase hex characters): {shown}")
    return value


def content_key(sha256: str) -> str:
    """The object's key relative to the store root: ``sha256/ab/cd/abcd…``."""
    digest = validate_sha256(sha256)
    return f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"


def copy_hashing(stream: BinaryIO, out: BinaryIO, *, max_bytes: int | None) -> StoredArtifact:
    """Copy ``stream`` into ``out`` chunk by chunk, hashing as it goes.

    Raises PayloadTooLarge as soon as more than ``max_bytes`` have been read: each read asks
    for at most one byte past the limit, so an oversized stream is never drained. The caller
    owns ``out`` and must discard it on any exception.
    """
    if max_bytes is not None and max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    hasher = hashlib.sha256()
    total = 0
    while True:
        want = CHUNK_SIZE if max_bytes is None else min(CHUNK_SIZE, max_bytes - total + 1)
        chunk = stream.read(want)
        if not chunk:
            break
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise PayloadTooLarge(
                f"artifact is larger than the limit of {max_bytes} bytes",
                extra={"max_bytes": max_bytes},
            )
        hasher.update(chunk)
        out.write(chunk)
    return StoredArtifact(sha256=hasher.hexdigest(), size=total)


def sha256_of_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.hexdigest()


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) owner-only (0o700); existing dirs are left as they are.

    ``Path.mkdir(parents=True, mode=…)`` applies the mode to the leaf only, so each missing
    level is created on its own.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue
        # mkdir's mode is filtered by the umask; make sure the result is exactly 0o700.
        os.chmod(directory, 0o700)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX needs the directory entry flushed too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore(abc.ABC):
    """Content-addressed blob storage. Every ``sha256`` argument is validated (InvalidInput).

    Stores hold clients or file handles only while a call runs, except where an adapter says
    otherwise; call ``close()`` (or use ``with``) when done.
    """

    @abc.abstractmethod
    def put(self, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        """Store the bytes of ``stream`` (read in chunks) under their sha256.

        Raises PayloadTooLarge once more than ``max_bytes`` were read, leaving nothing behind.
        Storing bytes that are already present keeps the single existing copy.
        """

    @abc.abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """A binary stream of the stored bytes; the caller closes it. NotFound if absent."""

    @abc.abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove the object; deleting an absent digest is not an error."""

    @abc.abstractmethod
    def size(self, sha256: str) -> int:
        """Size in bytes. NotFound if absent."""

    @abc.abstractmethod
    def local_path(self, sha256: str, cache_dir: Path) -> Path:
        """A local file holding the bytes (for runtimes that need a path). NotFound if absent.

        The file must be treated as read-only: it may be the store's own copy.
        """

    def close(self) -> None:  # noqa: B027 — optional hook, most adapters hold nothing
        """Release clients and connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
