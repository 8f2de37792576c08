"""LocalArtifactStore: artifacts in a folder on the local disk (the embedded default)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from konan.backends.artifacts.base import (
    ArtifactStore,
    StoredArtifact,
    content_key,
    copy_hashing,
    fsync_dir,
    make_private_dir,
)
from konan.core.errors import NotFound


class LocalArtifactStore(ArtifactStore):
    """Objects live at ``root/sha256/ab/cd/<digest>``; uploads are staged in ``root/tmp``.

    A put writes to an owner-only temp file in ``root/tmp`` (same filesystem as the final
    location), fsyncs it and ``os.replace``s it into place, so readers never see a partial
    object and a crash leaves at most a stray file in ``tmp``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.tmp_dir = self.root / "tmp"

    def __repr__(self) -> str:
        return f"LocalArtifactStore(root={str(self.root)!r})"

    def _path(self, sha256: str) -> Path:
        return self.root / content_key(sha256)

    def put(self, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        make_private_dir(self.tmp_dir)
        fd, tmp_name = tempfile.mkstemp(prefix="put-", dir=self.tmp_dir)  # mode 0o600
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                stored = copy_hashing(stream, out, max_bytes=max_bytes)
                out.flush()
                os.fsync(out.fileno())
            final = self._path(stored.sha256)
            if final.is_file():
                tmp.unlink()
                return stored
            make_private_dir(final.parent)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        fsync_dir(final.parent)
        return stored

    def open(self, sha256: str) -> BinaryIO:
        path = self._path(sha256)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"artifact {sha256} not found") from None

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def size(self, sha256: str) -> int:
        try:
            return self._path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"artifact {sha256} not found") from None

    def local_path(self, sha256: str, cache_dir: Path) -> Path:
        """The store's own file; ``cache_dir`` is not used. Callers must not modify it."""
        path = self._path(sha256)
        if not path.is_file():
            raise NotFound(f"artifact {sha256} not found")
        return path
