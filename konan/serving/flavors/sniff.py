"""Recognise model formats from their bytes without running anything they contain.

Standard library only, so the control plane can use it on uploads:

* pickle streams are walked opcode by opcode with ``pickletools.genops`` (which decodes, never
  executes) to list the globals a load would import;
* joblib files are pickles, optionally zlib/gzip/bz2/lzma/xz compressed, whose numpy arrays
  are written raw after a ``joblib.numpy_pickle.NumpyArrayWrapper``;
* ONNX files are protobuf ``ModelProto`` messages: the top-level fields are walked by their
  wire-format headers only (payloads skipped with seek), which is enough to tell an ONNX model
  from other bytes and to spot truncation without reading a large graph into memory.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import mmap
import pickletools
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

JOBLIB_ARRAY = "joblib.numpy_pickle.NumpyArrayWrapper"
UNRESOLVED_GLOBAL = "<a global whose name is computed while loading>"
MAX_PICKLE_OPS = 20_000_000
_SMALL_READ = 64 * 1024


def read_head(path: Path, size: int = 64) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


def pickle_protocol(head: bytes) -> int | None:
    """The protocol of a pickle stream that starts with a PROTO opcode (protocols 2-5)."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return head[1]
    return None


def compression(head: bytes) -> str | None:
    """The compressor joblib used, recognised by its magic bytes."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if len(head) >= 2 and head[0] == 0x78 and ((head[0] << 8) | head[1]) % 31 == 0:
        return "zlib"
    return None


class _ZlibReader(io.RawIOBase):
    """A streaming reader over a zlib stream (joblib's "zlib" compressor)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer and not self._inflate.eof:
            chunk = self._raw.read(_SMALL_READ)
            if not chunk:
                raise EOFError("compressed stream ended before the end-of-stream marker")
            self._buffer = self._inflate.decompress(chunk, _SMALL_READ)
            while not self._buffer and self._inflate.unconsumed_tail:
                self._buffer = self._inflate.decompress(self._inflate.unconsumed_tail, _SMALL_READ)
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        if not self._buffer and self._inflate.unconsumed_tail:
            self._buffer = self._inflate.decompress(self._inflate.unconsumed_tail, _SMALL_READ)
        return n


@contextmanager
def open_stream(path: Path, kind: str | None) -> Iterator[io.BufferedIOBase]:
    """The (decompressed) byte stream of a pickle or joblib file."""
    with path.open("rb") as raw:
        if kind is None:
            yield raw
        elif kind == "gzip":
            with gzip.GzipFile(fileobj=raw) as gz:
                yield gz
        elif kind == "bz2":
            with bz2.BZ2File(raw) as bz:
                yield bz
        elif kind in ("xz", "lzma"):
            with lzma.LZMAFile(raw) as lz:
                yield lz
        elif kind == "zlib":
            with io.BufferedReader(_ZlibReader(raw)) as zl:
                yield zl
        else:
            raise ValueError(f"{kind} compression is not supported")


class _MappedReader:
    """File-like view of an mmap for genops: large opcode arguments (array bytes) come back
    as zero-copy memoryviews, so scanning a big pickle doesn't copy it into memory."""

    def __init__(self, buffer: mmap.mmap) -> None:
        self._buffer = buffer
        self._view = memoryview(buffer)
        self._pos = 0

    def read(self, n: int = -1) -> bytes | memoryview:
        end = len(self._buffer) if n < 0 else min(self._pos + n, len(self._buffer))
        start, self._pos = self._pos, end
        if end - start <= _SMALL_READ:
            return self._buffer[start:end]
        return self._view[start:end]

    def readline(self) -> bytes:
        end = self._buffer.find(b"\n", self._pos)
        end = len(self._buffer) if end < 0 else end + 1
        start, self._pos = self._pos, end
        return self._buffer[start:end]

    def tell(self) -> int:
        return self._pos

    def release(self) -> None:
        self._view.release()


class _CountingReader:
    """A stream for genops that knows its position (decompressors cannot seek or tell)."""

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self._stream = stream
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._pos += len(data)
        return data

    def readline(self) -> bytes:
        data = self._stream.readline()
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos


@dataclass
class PickleScan:
    globals: list[str] = field(default_factory=list)
    complete: bool = False  # reached STOP
    joblib_arrays: bool = False  # raw numpy data follows; the walk stops at the first array
    error: str | None = None
    stream_error: str | None = None  # the file itself is truncated or corrupt (decompression)


_STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
_NO_STACK_EFFECT = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME", "PROTO"}


def scan_pickle(stream: Any, max_ops: int = MAX_PICKLE_OPS) -> PickleScan:
    """Walk a pickle's opcodes and list the globals it imports, in order of first use.

    STACK_GLOBAL takes module and name from the stack; they are resolved from the string
    pushes (and memo lookups) just before it, which is how picklers write them.
    """
    scan = PickleScan()
    seen: dict[str, None] = {}
    memo: dict[int, object] = {}
    recent: list[object] = [None, None]
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(stream)):
            if count >= max_ops:
                scan.error = f"more than {max_ops} opcodes"
                break
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                seen.setdefault(f"{module}.{attr}")
                recent.append(None)
            elif name == "STACK_GLOBAL":
                module_name, attr_name = recent[-2], recent[-1]
                if isinstance(module_name, str) and isinstance(attr_name, str):
                    seen.setdefault(f"{module_name}.{attr_name}")
                else:
                    seen.setdefault(UNRESOLVED_GLOBAL)
                recent.append(None)
            elif name in _STRING_OPS:
                recent.append(str(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1]
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(str(arg))] = recent[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(str(arg))))
            elif name == "STOP":
                scan.complete = True
                break
            elif name not in _NO_STACK_EFFECT:
                recent.append(None)
            del recent[:-2]
            if JOBLIB_ARRAY in seen:
                scan.joblib_arrays = True
    except (ValueError, UnicodeDecodeError) as exc:
        scan.error = str(exc)[:300] or type(exc).__name__
    except _STREAM_ERRORS as exc:
        scan.error = scan.stream_error = str(exc)[:300] or type(exc).__name__
    scan.globals = list(seen)
    return scan


def scan_pickle_file(path: Path, max_ops: int = MAX_PICKLE_OPS) -> PickleScan:
    """Scan a plain pickle (memory-mapped) or a joblib file (decompressed as a stream)."""
    head = read_head(path)
    kind = None if pickle_protocol(head) is not None else compression(head)
    if kind is None:
        if not head:
            return PickleScan(error="empty file")
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            reader = _MappedReader(mapped)
            try:
                return scan_pickle(reader, max_ops)
            finally:
                reader.release()
    try:
        with open_stream(path, kind) as stream:
            scan = scan_pickle(_CountingReader(stream), max_ops)
            if scan.stream_error is None:
                # Decompress to the end: truncation and checksum errors show only there.
                while stream.read(_SMALL_READ * 16):
                    pass
    except (ValueError, *_STREAM_ERRORS) as exc:
        reason = str(exc)[:300] or type(exc).__name__
        return PickleScan(error=reason, stream_error=reason)
    return scan


def pickle_globals(path: Path) -> list[str]:
    """The globals a pickle or joblib file would import when loaded ("module.name")."""
    return scan_pickle_file(path).globals


# ---- ONNX ------------------------------------------------------------------------------------

# ModelProto field number -> wire type (0 varint, 2 length-delimited); onnx/onnx.proto
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_IR_VERSION, _GRAPH = 1, 7
_MAX_IR_VERSION = 64


class NotOnnx(Exception):
    """The bytes are not an ONNX ModelProto."""


class TruncatedOnnx(Exception):
    """The bytes start like an ONNX model but end early or break the wire format."""


@dataclass(frozen=True)
class OnnxHeader:
    ir_version: int
    fields: tuple[int, ...]


def _varint(fh: BinaryIO) -> int | None:
    result = shift = 0
    for _ in range(10):
        byte = fh.read(1)
        if not byte:
            return None
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
    raise NotOnnx("varint longer than 10 bytes")


def sniff_onnx(path: Path) -> OnnxHeader:
    """Walk the top-level fields of a ModelProto; raise NotOnnx or TruncatedOnnx.

    Bytes count as ONNX once a valid ir_version field has been read; a break in the wire
    format after that is truncation or corruption, before it the bytes are something else.
    """
    size = path.stat().st_size
    fields: list[int] = []
    ir_version: int | None = None

    def fail(reason: str) -> Exception:
        return NotOnnx(reason) if ir_version is None else TruncatedOnnx(reason)

    with path.open("rb") as fh:
        while fh.tell() < size:
            tag = _varint(fh)
            if tag is None:
                raise fail("the file ends inside a field header")
            number, wire = tag >> 3, tag & 7
            expected = _MODEL_FIELDS.get(number)
            if (
                number == 0
                or (expected is not None and wire != expected)
                or wire not in (0, 1, 2, 5)
            ):
                raise fail(f"invalid field {number} (wire type {wire}) at byte {fh.tell()}")
            if wire == 0:
                value = _varint(fh)
                if value is None:
                    raise fail("the file ends inside a field")
                if number == _IR_VERSION and 1 <= value <= _MAX_IR_VERSION:
                    ir_version = value
            else:
                length = 8 if wire == 1 else 4 if wire == 5 else _varint(fh)
                if length is None or fh.tell() + length > size:
                    raise fail(f"field {number} runs past the end of the file")
                fh.seek(length, io.SEEK_CUR)
            fields.append(number)
    if ir_version is None or _GRAPH not in fields:
        raise fail("no ir_version and graph fields")
    return OnnxHeader(ir_version=ir_version, fields=tuple(fields))
