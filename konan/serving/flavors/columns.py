"""Columnar inputs -> arrays, shared by the loaders. Kept cheap: the predict path runs this."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from konan.core.errors import InvalidInput
from konan.serving.flavors.base import Columns

_NUMERIC_KINDS = frozenset("biuf")


class MatrixColumns(Mapping[str, np.ndarray]):
    """Numeric columns that the validator already holds as one float64 matrix [rows, features]
    in signature order. A flavor that wants a matrix in that order takes it as it is
    (`stacked`) instead of splitting it into columns and stacking them again, which cost more
    than the model call for small requests."""

    __slots__ = ("_index", "matrix", "names")

    def __init__(self, names: tuple[str, ...], index: Mapping[str, int], matrix: np.ndarray):
        self.names = names
        self._index = index
        self.matrix = matrix

    def __getitem__(self, name: str) -> np.ndarray:
        return self.matrix[:, self._index[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


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


def stacked(columns: Columns, names: Sequence[str] | None, dtype: Any) -> np.ndarray:
    """The named columns (all, in order, when names is None) as one 2-D array of dtype."""
    if (
        isinstance(columns, MatrixColumns)
        and dtype is not object
        and (names is None or names is columns.names or tuple(names) == columns.names)
    ):
        return columns.matrix.astype(dtype, copy=False)
    _, arrays = pick(columns, names)
    return matrix(arrays, dtype)


def scalar(value: Any) -> Any:
    """A numpy scalar as the matching Python value (for classes, JSON)."""
    return value.item() if isinstance(value, np.generic) else value
