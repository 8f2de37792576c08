"""Reference histograms: the bins a dataset version is profiled into, and that monitoring
counts live traffic into, so drift compares the same buckets on both sides.

Pure numpy (no pyarrow, no pandas): monitoring imports this on the ingest path.

Numeric columns
    ``edges`` are k sorted, unique, finite cut points taken from the reference quantiles. They
    define k + 1 bins, **closed on the right**::

        bin 0:  (-inf, e1]      bin i:  (e_i, e_{i+1}]      bin k:  (e_k, +inf)

    so a value exactly on an edge belongs to the bin *below* it. A value's bin index is the
    number of edges strictly smaller than it: ``np.searchsorted(edges, value, side="left")``.
    NaN and +/-inf are never binned: `assign_numeric` gives them -1 and `count_numeric` skips
    them (the profile counts them separately).

    Cut points are reference values (``method="inverted_cdf"``), so on the reference every bin
    holds some mass and, for a continuous column, each holds about 1/n_bins of it. A cut point
    equal to the reference maximum is dropped (its last bin would be empty), except for a
    constant column, which keeps its single cut point: counts ``[n, 0]``.

Categorical columns (strings, booleans)
    The most frequent ``max_categories`` values (ties broken by ``str(value)``) with their
    counts, plus an ``other`` count for the rest of the reference (the ``__other__`` bucket).
    Live traffic is counted as ``[per category..., other, unseen]``: see `count_categorical`.
    Nulls are not binned (the profile counts them).

JSON (what ``DatasetVersion.reference_bins`` stores per column)::

    {"kind": "numeric", "edges": [e1, ..., ek], "counts": [c0, ..., ck]}
    {"kind": "categorical", "categories": ["pro", "basic"], "counts": [70, 30], "other": 0}
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from konan.registry.signature import MAX_CATEGORIES

DEFAULT_NUMERIC_BINS = 20
OTHER = "__other__"  # label of the bucket for reference values outside the top categories
UNSEEN = "__unseen__"  # label of the live-only bucket: values the reference never had

Category = str | bool | int
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.intp]


def _as_float(values: npt.ArrayLike) -> FloatArray:
    # No copy when the caller already holds a float64 array (the usual case on ingest).
    return np.asarray(values, dtype=np.float64)


def _finite(values: FloatArray) -> FloatArray:
    mask = np.isfinite(values)
    return values if mask.all() else values[mask]


def _readonly(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.setflags(write=False)
    return array


def quantile_edges(values: npt.ArrayLike, n_bins: int = DEFAULT_NUMERIC_BINS) -> FloatArray:
    """Cut points that split ``values`` into about ``n_bins`` bins of equal mass.

    Non-finite values are ignored. The result is sorted, unique and never empty.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2, got {n_bins}")
    finite = _finite(_as_float(values))
    if finite.size == 0:
        raise ValueError("cannot bin a column without finite values")
    probabilities = np.arange(1, n_bins, dtype=np.float64) / n_bins
    edges = np.unique(np.quantile(finite, probabilities, method="inverted_cdf"))
    top = finite.max()
    if edges.size > 1 and edges[-1] >= top:
        edges = edges[:-1]
    return edges.astype(np.float64, copy=False)


def assign_numeric(values: npt.ArrayLike, edges: npt.ArrayLike) -> IndexArray:
    """Each value's bin index under the right-closed convention; -1 for NaN and +/-inf."""
    array = _as_float(values)
    index = np.searchsorted(_as_float(edges), array, side="left")
    finite = np.isfinite(array)
    if not finite.all():
        index[~finite] = -1
    return index


def count_numeric(values: npt.ArrayLike, edges: npt.ArrayLike) -> IntArray:
    """How many finite values fall in each of the ``len(edges) + 1`` bins."""
    edge_array = _as_float(edges)
    finite = _finite(_as_float(values))
    index = np.searchsorted(edge_array, finite, side="left")
    return np.bincount(index, minlength=edge_array.size + 1).astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class NumericBins:
    """Right-closed bins over ``edges`` with the reference ``counts`` (see the module doc)."""

    kind: ClassVar[Literal["numeric"]] = "numeric"

    edges: FloatArray
    counts: IntArray

    def __post_init__(self) -> None:
        edges = np.array(self.edges, dtype=np.float64).reshape(-1)
        counts = np.array(self.counts, dtype=np.int64).reshape(-1)
        if edges.size == 0:
            raise ValueError("numeric bins need at least one edge")
        if not np.isfinite(edges).all():
            raise ValueError("bin edges must be finite")
        if edges.size > 1 and not (np.diff(edges) > 0).all():
            raise ValueError("bin edges must be strictly increasing")
        if counts.size != edges.size + 1:
            raise ValueError(f"{edges.size} edges need {edges.size + 1} counts, got {counts.size}")
        if (counts < 0).any():
            raise ValueError("bin counts cannot be negative")
        object.__setattr__(self, "edges", _readonly(edges))
        object.__setattr__(self, "counts", _readonly(counts))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def proportions(self) -> FloatArray:
        total = self.total
        if total == 0:
            return np.zeros(self.counts.size, dtype=np.float64)
        return self.counts / total

    def assign(self, values: npt.ArrayLike) -> IndexArray:
        return assign_numeric(values, self.edges)

    def count(self, values: npt.ArrayLike) -> IntArray:
        return count_numeric(values, self.edges)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "edges": [float(e) for e in self.edges],
            "counts": [int(c) for c in self.counts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NumericBins:
        if data.get("kind") != cls.kind:
            raise ValueError(f"not numeric bins: kind={data.get('kind')!r}")
        edges, counts = data.get("edges"), data.get("counts")
        if not isinstance(edges, list) or not all(_is_number(e) for e in edges):
            raise ValueError("numeric bins: 'edges' must be a list of numbers")
        if not isinstance(counts, list) or not all(_is_count(c) for c in counts):
            raise ValueError("numeric bins: 'counts' must be a list of non-negative integers")
        return cls(edges=np.array(edges, dtype=np.float64), counts=np.array(counts, np.int64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericBins):
            return NotImplemented
        return np.array_equal(self.edges, other.edges) and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]


def numeric_bins(values: npt.ArrayLike, n_bins: int = DEFAULT_NUMERIC_BINS) -> NumericBins:
    """Quantile bins of a reference column (non-finite values ignored)."""
    array = _as_float(values)
    edges = quantile_edges(array, n_bins)
    return NumericBins(edges=edges, counts=count_numeric(array, edges))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _sort_key(item: tuple[Category, int]) -> tuple[int, str]:
    return (-item[1], str(item[0]))


def count_categorical(
    values: Iterable[Any], categories: Sequence[Category], *, has_other: bool = False
) -> IntArray:
    """Counts of ``values`` over ``[*categories, other, unseen]`` (length ``len(categories)+2``).

    A value outside ``categories`` is *unseen* when the categories are the whole reference
    (``has_other=False``: the reference had no ``__other__`` mass). When the reference had more
    values than it kept (``has_other=True``), such a value may come from the reference's tail,
    which is not stored, so it is counted as *other* and ``unseen`` stays 0. `CategoricalBins.count`
    passes ``has_other`` for you. Nulls (None, NaN) are not counted.
    """
    index = {category: i for i, category in enumerate(categories)}
    return _count_with_index(values, index, has_other)


def _count_with_index(values: Iterable[Any], index: Mapping[Any, int], has_other: bool) -> IntArray:
    items = values.tolist() if isinstance(values, np.ndarray) else values
    return _count_pairs(Counter(items).items(), index, has_other)


def _count_pairs(
    pairs: Iterable[tuple[Any, int]], index: Mapping[Any, int], has_other: bool
) -> IntArray:
    size = len(index)
    out = np.zeros(size + 2, dtype=np.int64)
    outside = size if has_other else size + 1
    for value, n in pairs:
        position = index.get(value)
        if position is not None:
            out[position] += n
        elif not _is_null(value):
            out[outside] += n
    return out


@dataclass(frozen=True, eq=False)
class CategoricalBins:
    """Top reference categories with their counts, and the ``other`` count for the rest."""

    kind: ClassVar[Literal["categorical"]] = "categorical"

    categories: tuple[Category, ...]
    counts: IntArray
    other: int = 0
    _index: dict[Category, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        categories = tuple(self.categories)
        counts = np.array(self.counts, dtype=np.int64).reshape(-1)
        if counts.size != len(categories):
            raise ValueError(f"{len(categories)} categories need as many counts, got {counts.size}")
        if (counts < 0).any() or self.other < 0:
            raise ValueError("category counts cannot be negative")
        index: dict[Category, int] = {}
        for i, category in enumerate(categories):
            if not isinstance(category, str | bool | int):
                raise ValueError(f"category {category!r} is not a string, boolean or integer")
            if category in index:
                raise ValueError(f"category {category!r} appears twice")
            index[category] = i
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "counts", _readonly(counts))
        object.__setattr__(self, "other", int(self.other))
        object.__setattr__(self, "_index", index)

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.other

    @property
    def labels(self) -> list[str]:
        """Bucket labels for display: each category as text, then ``__other__``."""
        return [str(c) for c in self.categories] + [OTHER]

    def reference_counts(self) -> IntArray:
        """The reference over ``[*categories, other, unseen]``, aligned with `count`."""
        return np.concatenate([self.counts, np.array([self.other, 0], dtype=np.int64)])

    def count(self, values: Iterable[Any]) -> IntArray:
        return _count_with_index(values, self._index, self.other > 0)

    def count_counted(self, counted: Mapping[Any, int]) -> IntArray:
        """Like `count`, from values already counted (value -> how many)."""
        return _count_pairs(counted.items(), self._index, self.other > 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "categories": list(self.categories),
            "counts": [int(c) for c in self.counts],
            "other": self.other,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CategoricalBins:
        if data.get("kind") != cls.kind:
            raise ValueError(f"not categorical bins: kind={data.get('kind')!r}")
        categories, counts, other = data.get("categories"), data.get("counts"), data.get("other")
        if not isinstance(categories, list):
            raise ValueError("categorical bins: 'categories' must be a list")
        if not isinstance(counts, list) or not all(_is_count(c) for c in counts):
            raise ValueError("categorical bins: 'counts' must be a list of non-negative integers")
        if not isinstance(other, int) or not _is_count(other):
            raise ValueError("categorical bins: 'other' must be a non-negative integer")
        return cls(categories=tuple(categories), counts=np.array(counts, np.int64), other=other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoricalBins):
            return NotImplemented
        return (
            self.categories == other.categories
            and [type(c) for c in self.categories] == [type(c) for c in other.categories]
            and np.array_equal(self.counts, other.counts)
            and self.other == other.other
        )

    __hash__ = None  # type: ignore[assignment]


def categorical_bins_from_counts(
    counts: Mapping[Category, int], max_categories: int = MAX_CATEGORIES
) -> CategoricalBins:
    """Bins from exact value counts: the ``max_categories`` most frequent, the rest in other."""
    if max_categories < 1:
        raise ValueError(f"max_categories must be at least 1, got {max_categories}")
    ranked = sorted(((k, int(n)) for k, n in counts.items() if n > 0), key=_sort_key)
    top = ranked[:max_categories]
    other = sum(n for _, n in ranked[max_categories:])
    return CategoricalBins(
        categories=tuple(k for k, _ in top),
        counts=np.array([n for _, n in top], dtype=np.int64),
        other=other,
    )


def categorical_bins(
    values: Iterable[Any], max_categories: int = MAX_CATEGORIES
) -> CategoricalBins:
    """Frequencies of a reference column's top categories plus the ``__other__`` bucket."""
    items = values.tolist() if isinstance(values, np.ndarray) else values
    counted = Counter(v for v in items if not _is_null(v))
    return categorical_bins_from_counts(counted, max_categories)


Bins = NumericBins | CategoricalBins


def bins_from_json(data: Mapping[str, Any]) -> Bins:
    """Either kind of bins from its JSON (one entry of ``DatasetVersion.reference_bins``)."""
    kind = data.get("kind")
    if kind == NumericBins.kind:
        return NumericBins.from_json(data)
    if kind == CategoricalBins.kind:
        return CategoricalBins.from_json(data)
    raise ValueError(f"unknown bins kind {kind!r}")
