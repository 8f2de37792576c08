"""What every loaded model looks like to the data plane, whatever its flavor.

Inputs are columnar: a mapping from feature name to the column's values, in signature order
(the model server has already validated them against the signature). Each flavor turns that
into what its runtime wants (a float matrix, a DataFrame, ONNX tensors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

Flavor = Literal["sklearn", "onnx", "python", "pickle", "joblib"]
FLAVORS: tuple[Flavor, ...] = ("sklearn", "onnx", "python", "pickle", "joblib")

Columns = Mapping[str, Sequence[Any]]


class LoadedModel(Protocol):
    flavor: Flavor
    feature_names: list[str] | None
    """The columns the model declares, in its own order (sklearn feature_names_in_, ONNX input
    names when there is one input per column); None when it only knows a column count."""
    n_features: int | None
    classes: list[Any] | None
    has_proba: bool
    untrusted_types: tuple[str, ...]
    """skops types outside skops' defaults that this load needed the caller to trust."""

    def predict(self, columns: Columns) -> np.ndarray: ...

    def predict_proba(self, columns: Columns) -> np.ndarray | None: ...

    def predict_with_proba(self, columns: Columns) -> tuple[np.ndarray, np.ndarray | None]:
        """Both in one model call where the runtime allows it (ONNX does)."""
        ...
