"""Receiving uploaded files: streamed to a private scratch folder, hashed, size-limited.

Nothing here parses or loads the bytes. A WorkDir is removed when the request ends, whatever
happened, so a refused upload leaves no file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from konan.core.errors import InvalidInput, PayloadTooLarge

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Received:
    path: Path
    sha256: str
    size: int
    filename: str


class WorkDir:
    """An owner-only (0o700) scratch folder for one request, deleted on exit."""

    def __init__(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        os.chmod(parent, 0o700)
        self.path = Path(tempfile.mkdtemp(prefix="upload-", dir=parent))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def receive(
    stream: BinaryIO, workdir: WorkDir, name: str, *, max_bytes: int, filename: str = ""
) -> Received:
    """Copy `stream` into the work dir under `name`, hashing it; 413 past `max_bytes`."""
    dest = workdir.path / name
    digest = hashlib.sha256()
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                out.close()
                dest.unlink(missing_ok=True)
                raise PayloadTooLarge(f"{name} is larger than the limit of {max_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        dest.unlink(missing_ok=True)
        raise InvalidInput(f"{name} is empty")
    return Received(path=dest, sha256=digest.hexdigest(), size=size, filename=filename)
