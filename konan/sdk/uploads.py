"""Turning what a data scientist holds (an estimator, a DataFrame, a path) into upload bytes.

scikit-learn, skops and pandas are imported only when such an object is passed, so the SDK
stays importable in a slim environment.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

ProgressCallback = Callable[[int], None]


class ProgressReader(io.RawIOBase):
    """A read-only file wrapper that reports bytes read (for progress bars)."""

    def __init__(self, inner: BinaryIO, callback: ProgressCallback | None) -> None:
        self.inner = inner
        self.callback = callback

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        if data and self.callback is not None:
            self.callback(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


def _is_sklearn_estimator(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module.startswith("sklearn.") or (hasattr(obj, "get_params") and hasattr(obj, "fit"))


def model_payload(model_or_path: Any) -> tuple[str, BinaryIO, int, str | None]:
    """(filename, stream, size, flavor) for a path, raw bytes, or an in-memory sklearn model."""
    if isinstance(model_or_path, str | os.PathLike):
        path = Path(model_or_path)
        return path.name, path.open("rb"), path.stat().st_size, None
    if isinstance(model_or_path, bytes | bytearray):
        data = bytes(model_or_path)
        return "model.bin", io.BytesIO(data), len(data), None
    if _is_sklearn_estimator(model_or_path):
        import skops.io

        data = skops.io.dumps(model_or_path)
        return "model.skops", io.BytesIO(data), len(data), "sklearn"
    raise TypeError(
        "register_model takes a path, bytes, or a scikit-learn estimator "
        f"(got {type(model_or_path).__name__})"
    )


def is_classifier(model: Any) -> bool | None:
    if not _is_sklearn_estimator(model):
        return None
    from sklearn.base import is_classifier as sk_is_classifier

    return bool(sk_is_classifier(model))


def table_payload(data: Any) -> tuple[str, BinaryIO, int]:
    """(filename, stream, size) for a path (CSV/Parquet) or a pandas DataFrame (as Parquet)."""
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        return path.name, path.open("rb"), path.stat().st_size
    if type(data).__module__.startswith("pandas") and hasattr(data, "to_parquet"):
        buffer = io.BytesIO()
        data.to_parquet(buffer, index=False)
        size = buffer.tell()
        buffer.seek(0)
        return "data.parquet", buffer, size
    raise TypeError(
        f"reference/dataset data must be a path or a pandas DataFrame (got {type(data).__name__})"
    )
