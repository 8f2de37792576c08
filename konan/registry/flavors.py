"""Which flavor an uploaded artifact is, from its bytes alone (control plane).

Nothing here deserialises a model: zips are read for their directory and one small JSON
member, pickles are walked opcode by opcode (pickletools), ONNX files by their protobuf field
headers. Loading and predicting happen in the validation sandbox (konan.registry.sandbox).

    skops zip (schema.json at the root)          -> "sklearn"
    zip with konan-model.json (custom model)     -> "python"
    protobuf ModelProto                          -> "onnx"
    pickle stream, protocol 2-5                  -> "pickle"
    compressed pickle, or joblib's array layout  -> "joblib"
"""

from __future__ import annotations

import json
from pathlib import Path

from konan.core.errors import InvalidInput
from konan.serving.flavors.archive import ArchiveLimits, is_zip, open_zip, read_member
from konan.serving.flavors.base import FLAVORS, Flavor
from konan.serving.flavors.manifest import MANIFEST, read_manifest
from konan.serving.flavors.sniff import (
    NotOnnx,
    TruncatedOnnx,
    compression,
    open_stream,
    pickle_protocol,
    read_head,
    scan_pickle_file,
    sniff_onnx,
)
from konan.serving.flavors.sniff import pickle_globals as _pickle_globals

__all__ = ["ALIASES", "FLAVORS", "Flavor", "check_declared", "detect_flavor", "pickle_globals"]

ALIASES: dict[str, Flavor] = {"skops": "sklearn"}
SKOPS_SCHEMA = "schema.json"
_MAX_SCHEMA_BYTES = 256 * 1024 * 1024
_HINTS = (
    (b"PAR1", "a Parquet file"),
    (b"\x89HDF", "an HDF5 file (Keras?)"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"{", "a JSON or safetensors file"),
)


def detect_flavor(path: Path, *, limits: ArchiveLimits = ArchiveLimits()) -> Flavor:
    """The flavor of the artifact at path, or InvalidInput saying what is wrong with it."""
    head = read_head(path)
    if not head:
        raise InvalidInput("the artifact is an empty file")
    if is_zip(head):
        return _zip_flavor(path, limits)
    if pickle_protocol(head) is not None:
        return _pickle_flavor(path)
    try:
        sniff_onnx(path)
        return "onnx"
    except TruncatedOnnx as exc:
        raise InvalidInput(f"truncated or corrupt ONNX model: {exc}") from None
    except NotOnnx:
        pass
    kind = compression(head)
    if kind is not None:
        return _compressed_flavor(path, kind)
    if head[:1] == b"\x80":
        hint = f"a pickle of unsupported protocol {head[1] if len(head) > 1 else '?'}"
    else:
        hint = next((what for magic, what in _HINTS if head.startswith(magic)), "unknown bytes")
    raise InvalidInput(
        f"unrecognised artifact ({hint}, starting {head[:8].hex(' ')}): expected a skops file, "
        "an ONNX model, a custom-model zip with konan-model.json, or a pickle/joblib file"
    )


def _zip_flavor(path: Path, limits: ArchiveLimits) -> Flavor:
    with open_zip(path, limits) as zf:
        names = set(zf.namelist())
        has_schema, has_manifest = SKOPS_SCHEMA in names, MANIFEST in names
        if has_schema and has_manifest:
            raise InvalidInput(
                f"the zip has both {SKOPS_SCHEMA} (skops) and {MANIFEST}; which is it?"
            )
        if has_manifest:
            read_manifest(zf)
            return "python"
        if has_schema:
            _check_skops_schema(read_member(zf, SKOPS_SCHEMA, _MAX_SCHEMA_BYTES))
            return "sklearn"
        if any(n.endswith("data.pkl") for n in names):
            raise InvalidInput(
                "this looks like a PyTorch checkpoint, which needs full unpickling to load; "
                "export the model to ONNX"
            )
    raise InvalidInput(
        f"a zip without {SKOPS_SCHEMA} at its root (skops) or {MANIFEST} (custom Python model)"
    )


def _check_skops_schema(raw: bytes) -> None:
    try:
        schema = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"corrupt skops file: {SKOPS_SCHEMA} is not JSON ({exc})") from None
    if not isinstance(schema, dict) or "__class__" not in schema or "protocol" not in schema:
        raise InvalidInput(f"corrupt skops file: {SKOPS_SCHEMA} is not a skops schema")


def _pickle_flavor(path: Path) -> Flavor:
    scan = scan_pickle_file(path)
    if scan.joblib_arrays:
        return "joblib"  # joblib writes arrays raw after their wrapper; the walk stops there
    if scan.error is not None or not scan.complete:
        raise InvalidInput(f"truncated or corrupt pickle: {scan.error or 'no STOP opcode'}")
    return "pickle"


def _compressed_flavor(path: Path, kind: str) -> Flavor:
    if kind == "lz4":
        raise InvalidInput("lz4-compressed joblib files are not supported; use zlib, gzip or xz")
    try:
        with open_stream(path, kind) as stream:
            start = stream.read(2)
    except (OSError, EOFError, ValueError) as exc:
        raise InvalidInput(f"corrupt {kind} data: {exc}") from None
    if pickle_protocol(start) is None:
        raise InvalidInput(f"{kind}-compressed data that is not a pickle or joblib file")
    scan = scan_pickle_file(path)
    if scan.stream_error is not None or (scan.error is not None and not scan.joblib_arrays):
        raise InvalidInput(f"truncated or corrupt joblib file: {scan.error}")
    return "joblib"


def check_declared(declared: str | None, detected: str) -> Flavor:
    """The flavor to use: the detected one, when the uploader's declaration (if any) agrees.

    "skops" is an alias of "sklearn". A plain pickle declared as joblib is accepted (joblib
    loads plain pickles); everything else must match the bytes.
    """
    if detected not in FLAVORS:
        raise ValueError(f"unknown detected flavor {detected!r}")
    actual = FLAVORS[FLAVORS.index(detected)]
    if declared is None or not declared.strip():
        return actual
    name = declared.strip().lower()
    wanted = ALIASES.get(name, name)
    if wanted not in FLAVORS:
        raise InvalidInput(
            f"unknown flavor {declared!r}; use one of {', '.join((*FLAVORS, *ALIASES))}"
        )
    if wanted == actual or (wanted == "joblib" and actual == "pickle"):
        return "joblib" if wanted == "joblib" else actual
    raise InvalidInput(
        f"declared {declared} but the file is {_describe(actual)}; declare {actual} "
        "or upload the right file"
    )


def _describe(flavor: Flavor) -> str:
    return {
        "sklearn": "a skops (sklearn) file",
        "onnx": "an ONNX model",
        "python": "a custom Python model zip",
        "pickle": "a pickle",
        "joblib": "a joblib file",
    }[flavor]


def pickle_globals(path: Path) -> list[str]:
    """The globals a pickle or joblib file would import ("module.name"), read without loading.

    For joblib files the walk ends at the first raw numpy array, so the list may be partial.
    """
    return _pickle_globals(path)
