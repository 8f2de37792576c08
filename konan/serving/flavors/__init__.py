"""Model loaders: one per flavor, one LoadedModel surface for the data plane.

Imported by model servers and by the validation sandbox's child process, never by the control
plane's request path (which only inspects bytes, with ``archive``, ``manifest`` and ``sniff``,
the standard-library-only modules here). Heavy runtimes (skops, onnxruntime, pandas) are
imported by the loader that needs them, when it is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from konan.core.errors import InvalidInput
from konan.serving.flavors.archive import ArchiveLimits
from konan.serving.flavors.base import FLAVORS, Columns, Flavor, LoadedModel

__all__ = ["FLAVORS", "ArchiveLimits", "Columns", "Flavor", "LoadedModel", "load_model"]


def load_model(
    path: Path,
    flavor: str,
    *,
    trusted_types: Sequence[str] = (),
    allow_pickle: bool = False,
    workdir: Path | None = None,
    onnx_threads: int = 1,
    archive_limits: ArchiveLimits = ArchiveLimits(),
) -> LoadedModel:
    """Load a model artifact of a known flavor (see konan.registry.flavors.detect_flavor).

    trusted_types: skops types the caller vouches for; only those the file needs are trusted.
    allow_pickle: an admin marked this version trusted, so pickle/joblib may run their code.
    workdir: where a custom-model bundle is extracted (a fresh private subdirectory of it);
    the system temp dir when None. The subdirectory is removed with the model.
    """
    path = Path(path)
    if flavor == "sklearn":
        from konan.serving.flavors.sklearn import load_skops

        return load_skops(path, trusted_types=trusted_types, limits=archive_limits)
    if flavor == "onnx":
        from konan.serving.flavors.onnx import load_onnx

        return load_onnx(path, threads=onnx_threads)
    if flavor == "python":
        from konan.serving.flavors.python import load_python

        return load_python(path, workdir=workdir, limits=archive_limits)
    if flavor in ("pickle", "joblib"):
        from konan.serving.flavors.pickle import load_pickled

        return load_pickled(
            path, "joblib" if flavor == "joblib" else "pickle", allow_pickle=allow_pickle
        )
    raise InvalidInput(f"unknown flavor {flavor!r}; one of {', '.join(FLAVORS)}")
