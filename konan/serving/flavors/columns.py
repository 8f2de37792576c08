"""Columnar inputs -> arrays, shared by the loaders. Kept cheap: the predict path runs this."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from konan.core.errors import InvalidInput
from konan.serving.flavors.base import Columns

_NUMERIC_KINDS = frozenset("biuf")


def as_array(values: Sequence[Any]) -> np.ndarray:
    """One column as a 1-D array: numeric when every value is a number or missing, else object."""
    array = values if isinstance(values, np.ndarray) else np.asarray(values)
    if array.ndim != 1:
        array = array.reshape(len(array), -1)
        if array.shape[1] != 1:
            raise InvalidInput("each column must hold one value per row")
        array = array[:, 0]
    if array.dtype.kind in _NUMERIC_KINDS:
        return array
    if array.dtype.kind == "O" and not any(isinstance(v, str | bytes) for v in array):
        try:
            return array.astype(np.float64)  # numbers with None -> NaN
        except (TypeError, ValueError):
            return array
    return array.astype(object)


def is_numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in _NUMERIC_KINDS


def pick(columns: Columns, names: Sequence[str] | None) -> tuple[list[str], list[np.ndarray]]:
    """The named columns (all of them, in the mapping's order, when names is None)."""
    wanted = list(columns) if names is None else list(names)
    missing = [n for n in wanted if n not in columns]
    if missing:
        raise InvalidInput(f"missing columns the model needs: {', '.join(missing)}")
    arrays = [as_array(columns[n]) for n in wanted]
    if len({len(a) for a in arrays}) > 1:
        raise InvalidInput("columns have different numbers of rows")
    return wanted, arrays


def matrix(arrays: Sequence[np.ndarray], dtype: Any) -> np.ndarray:
    """Columns side by side as a 2-D array of dtype."""
    if not arrays:
        raise InvalidInput("no input columns")
    if dtype is object:
        return np.column_stack([a.astype(object) for a in arrays])
    return np.column_stack(arrays).astype(dtype, copy=False)


def scalar(value: Any) -> Any:
    """A numpy scalar as the matching Python value (for classes, JSON)."""
    return value.item() if isinstance(value, np.generic) else value
