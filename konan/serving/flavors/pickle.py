"""pickle and joblib files: they run code when loaded, so only when an admin trusted them.

Without that trust the file is not opened by pickle at all; the refusal names the globals the
load would import (read with pickletools, nothing executed) so a person can judge the file.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from konan.core.errors import InvalidInput
from konan.serving.flavors.estimator import EstimatorModel
from konan.serving.flavors.sniff import pickle_globals


def refuse_untrusted(path: Path, flavor: str) -> InvalidInput:
    names = pickle_globals(path)
    shown = ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    return InvalidInput(
        f"{flavor} files run code when they are loaded, so Konan loads them only when an admin "
        f"marks the version trusted; this file would import: {shown or 'nothing it names'}. "
        "Save the model with skops or ONNX instead",
        extra={"reason": "pickle_refused", "globals": names},
    )


def load_pickled(
    path: Path, flavor: Literal["pickle", "joblib"], *, allow_pickle: bool
) -> EstimatorModel:
    if not allow_pickle:
        raise refuse_untrusted(path, flavor)
    if flavor == "joblib":
        joblib: Any = importlib.import_module("joblib")  # untyped; imported only when trusted
        model = joblib.load(path)
    else:
        import pickle

        with path.open("rb") as fh:
            model = pickle.load(fh)  # noqa: S301 - an admin trusted this version; sandboxed
    return EstimatorModel(model, flavor=flavor)
