"""An object with scikit-learn's predict/predict_proba/classes_ surface, as a LoadedModel.

Used for skops-loaded estimators, trusted pickles and custom Python models. Input shape:

* fitted on a plain array, all columns numeric -> 2-D float64 array (the fast path);
* fitted on a DataFrame (``feature_names_in_``) -> a DataFrame with those columns in that
  order; all-numeric columns are wrapped around one float block, which is cheap;
* any string column -> DataFrame (or an object array when the model has no column names);
* custom Python models always get a DataFrame: that is their documented interface.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from konan.core.errors import InvalidInput
from konan.serving.flavors.base import Columns, Flavor
from konan.serving.flavors.columns import MatrixColumns, is_numeric, matrix, pick, scalar, stacked


class EstimatorModel:
    def __init__(
        self,
        model: Any,
        *,
        flavor: Flavor,
        frame_input: bool = False,
        untrusted_types: tuple[str, ...] = (),
    ) -> None:
        if not callable(getattr(model, "predict", None)):
            raise InvalidInput(
                f"the loaded object ({type(model).__name__}) has no predict method",
                extra={"reason": "load_error"},
            )
        self.model = model
        self.flavor: Flavor = flavor
        self.untrusted_types = untrusted_types
        self._frame_input = frame_input
        names = getattr(model, "feature_names_in_", None)
        if names is None and frame_input:
            names = getattr(model, "feature_names", None)
        self.feature_names: list[str] | None = (
            [str(n) for n in names] if names is not None else None
        )
        n_features = getattr(model, "n_features_in_", None)
        self.n_features: int | None = (
            int(n_features) if isinstance(n_features, int | np.integer) else None
        )
        if self.n_features is None and self.feature_names is not None:
            self.n_features = len(self.feature_names)
        classes = getattr(model, "classes_", None)
        self.classes: list[Any] | None = (
            [scalar(c) for c in classes] if classes is not None else None
        )
        self.has_proba = callable(getattr(model, "predict_proba", None))

    def _input(self, columns: Columns) -> Any:
        if isinstance(columns, MatrixColumns) and not self._frame_input:
            block = stacked(columns, self.feature_names, np.float64)
            if self.feature_names is None:
                return block
            pd = _pandas()
            return pd.DataFrame(block, columns=self.feature_names, copy=False)
        names, arrays = pick(columns, self.feature_names)
        if self._frame_input or (
            self.feature_names is not None and not all(map(is_numeric, arrays))
        ):
            pd = _pandas()
            return pd.DataFrame(dict(zip(names, arrays, strict=True)))
        if all(map(is_numeric, arrays)):
            block = matrix(arrays, np.float64)
            if self.feature_names is None:
                return block
            pd = _pandas()
            return pd.DataFrame(block, columns=names, copy=False)
        return matrix(arrays, object)

    def predict(self, columns: Columns) -> np.ndarray:
        return _one_per_row(np.asarray(self.model.predict(self._input(columns))))

    def predict_proba(self, columns: Columns) -> np.ndarray | None:
        if not self.has_proba:
            return None
        return np.asarray(self.model.predict_proba(self._input(columns)))

    def predict_with_proba(self, columns: Columns) -> tuple[np.ndarray, np.ndarray | None]:
        data = self._input(columns)
        labels = _one_per_row(np.asarray(self.model.predict(data)))
        if not self.has_proba:
            return labels, None
        return labels, np.asarray(self.model.predict_proba(data))


def _pandas() -> Any:
    # Imported on first use (numeric models never need it); untyped for mypy without stubs.
    return importlib.import_module("pandas")


def _one_per_row(values: np.ndarray) -> np.ndarray:
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    return values
