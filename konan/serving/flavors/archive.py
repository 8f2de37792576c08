"""Zip archives from users (skops files, custom-model bundles), opened defensively.

Standard library only: the control plane imports this to inspect uploads, the loaders to
extract them. Every zip is checked as a whole before any member is read for use: entry
names (no ``..``, absolute paths, backslashes, NUL), entry types (no symlinks, devices),
duplicates, encryption, count, declared total size and per-entry compression ratio (zip
bombs), and nested archives. Extraction only ever happens into a fresh private directory.

Declared sizes can be trusted as a bound: ``zipfile`` never returns more than an entry's
declared ``file_size`` and fails the CRC check when the data disagrees; extraction counts
the bytes it writes anyway.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from konan.core.errors import InvalidInput

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

# Containers inside a container: refused rather than tracking limits across levels (B08).
# Single-stream compressors (.gz, .xz, .bz2) are not archives and stay allowed as data files.
_ARCHIVE_SUFFIXES = (".zip", ".jar", ".whl", ".egg", ".skops", ".tar", ".tgz", ".tbz2", ".txz")
_ARCHIVE_INFIXES = (".tar.",)
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08", b"7z\xbc\xaf\x27\x1c", b"Rar!")
_TAR_MAGIC_OFFSET = 257
_DRIVE = re.compile(r"^[A-Za-z]:")
_COMPRESSIONS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 10_000
    max_total_bytes: int = 2 * 1024**3
    # uncompressed/compressed above this is a bomb, for entries larger than ratio_floor_bytes
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1024**2


def is_zip(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC)


def open_zip(path: Path, limits: ArchiveLimits = ArchiveLimits()) -> zipfile.ZipFile:
    """Open and check a zip; the caller closes it. Any problem is an InvalidInput."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise InvalidInput(f"corrupt or truncated zip archive: {exc}") from None
    try:
        check_zip(zf, limits)
    except BaseException:
        zf.close()
        raise
    return zf


def entry_parts(name: str) -> list[str]:
    """The path components of an entry name, or InvalidInput when it could escape."""
    if not name or "\x00" in name:
        raise InvalidInput("zip entry with an empty name or a NUL byte")
    if "\\" in name:
        raise InvalidInput(f"zip entry {name[:200]!r} contains a backslash")
    if name.startswith("/") or _DRIVE.match(name):
        raise InvalidInput(f"zip entry {name[:200]!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"zip entry {name[:200]!r} points outside the archive (..)")
    if not parts:
        raise InvalidInput(f"zip entry {name[:200]!r} has no file name")
    return parts


def check_zip(zf: zipfile.ZipFile, limits: ArchiveLimits = ArchiveLimits()) -> None:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise InvalidInput(
            f"the archive has {len(infos)} entries; the limit is {limits.max_entries}"
        )
    seen: set[str] = set()
    total = 0
    for info in infos:
        key = "/".join(entry_parts(info.filename))
        if key in seen:
            raise InvalidInput(f"zip entry {key[:200]!r} appears twice")
        seen.add(key)
        _check_entry_type(info)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise InvalidInput(
                f"the archive unpacks to more than {limits.max_total_bytes} bytes (zip bomb?)"
            )
        if info.file_size > limits.ratio_floor_bytes:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise InvalidInput(
                    f"zip entry {key[:200]!r} has a compression ratio of {ratio:.0f}:1 "
                    f"(limit {limits.max_ratio:.0f}:1; zip bomb?)"
                )
        if not info.is_dir():
            _check_not_archive(zf, info, key)


def _check_entry_type(info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise InvalidInput(f"zip entry {info.filename[:200]!r} is a symbolic link")
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise InvalidInput(f"zip entry {info.filename[:200]!r} is not a regular file")
    if info.flag_bits & 0x1:
        raise InvalidInput(f"zip entry {info.filename[:200]!r} is encrypted")
    if info.compress_type not in _COMPRESSIONS:
        raise InvalidInput(
            f"zip entry {info.filename[:200]!r} uses an unsupported compression method "
            f"({info.compress_type})"
        )


def _check_not_archive(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> None:
    lower = key.lower()
    nested = lower.endswith(_ARCHIVE_SUFFIXES) or any(x in lower for x in _ARCHIVE_INFIXES)
    if not nested and info.file_size >= 4:
        try:
            with zf.open(info) as fh:
                head = fh.read(_TAR_MAGIC_OFFSET + 8)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise InvalidInput(f"zip entry {key[:200]!r} is corrupt: {exc}") from None
        nested = head.startswith(_ARCHIVE_MAGIC) or head[_TAR_MAGIC_OFFSET:].startswith(b"ustar")
    if nested:
        raise InvalidInput(
            f"zip entry {key[:200]!r} is itself an archive; nested archives are refused"
        )


def read_member(zf: zipfile.ZipFile, name: str, max_bytes: int) -> bytes:
    """One member's bytes, refusing members over max_bytes and corrupt data."""
    info = zf.getinfo(name)
    if info.file_size > max_bytes:
        raise InvalidInput(f"{name} is larger than {max_bytes} bytes")
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise InvalidInput(f"zip entry {name!r} is corrupt: {exc}") from None


def private_dir(parent: Path | None = None, prefix: str = "konan-") -> Path:
    """A fresh directory only the current user can enter (mkdtemp creates it 0o700)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def extract_zip(zf: zipfile.ZipFile, dest: Path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """Extract a checked zip into dest, an empty private directory made for this archive."""
    root = dest.resolve()
    if any(root.iterdir()):
        raise ValueError(f"{dest} is not empty")
    written = 0
    for info in zf.infolist():
        parts = entry_parts(info.filename)
        target = root.joinpath(*parts)
        if not target.resolve().is_relative_to(root):
            raise InvalidInput(f"zip entry {info.filename[:200]!r} points outside the archive")
        if info.is_dir():
            _make_dirs(root, parts)
            continue
        _make_dirs(root, parts[:-1])
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            try:
                with zf.open(info) as src:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > limits.max_total_bytes:
                            raise InvalidInput(
                                f"the archive unpacks to more than {limits.max_total_bytes} bytes"
                            )
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, NotImplementedError) as exc:
                raise InvalidInput(f"zip entry {info.filename[:200]!r} is corrupt: {exc}") from None


def _make_dirs(root: Path, parts: list[str]) -> None:
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise InvalidInput(f"zip path {'/'.join(parts)[:200]!r} crosses a link")
        if not current.exists():
            current.mkdir(mode=0o700)
