"""Reference bins: the buckets monitoring counts live traffic into, and their JSON."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from konan.registry.binning import (
    OTHER,
    CategoricalBins,
    NumericBins,
    assign_numeric,
    bins_from_json,
    categorical_bins,
    count_categorical,
    count_numeric,
    numeric_bins,
    quantile_edges,
)
from konan.registry.signature import MAX_CATEGORIES

EDGES = np.array([1.0, 2.0, 3.0])


def test_values_on_an_edge_fall_in_the_bin_below_it() -> None:
    # bins: (-inf, 1], (1, 2], (2, 3], (3, +inf)
    values = np.array([-5.0, 1.0, 1.5, 2.0, 2.0001, 3.0, 3.5, 100.0])

    assert assign_numeric(values, EDGES).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert count_numeric(values, EDGES).tolist() == [2, 2, 2, 2]


def test_below_the_first_and_above_the_last_edge_use_the_open_end_bins() -> None:
    values = np.array([-1e300, 0.999999, 3.000001, 1e300])

    assert assign_numeric(values, EDGES).tolist() == [0, 0, 3, 3]
    assert count_numeric(values, EDGES).tolist() == [2, 0, 0, 2]


def test_nan_and_infinities_are_never_binned() -> None:
    values = np.array([np.nan, 1.5, np.inf, -np.inf, 2.5])

    assert assign_numeric(values, EDGES).tolist() == [-1, 1, -1, -1, 2]
    assert count_numeric(values, EDGES).tolist() == [0, 1, 1, 0]


def test_assign_and_count_agree_on_random_values() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=10_000)
    values[::97] = np.nan
    bins = numeric_bins(rng.normal(size=5_000), n_bins=10)

    index = bins.assign(values)
    counted = np.bincount(index[index >= 0], minlength=bins.edges.size + 1)

    assert counted.tolist() == bins.count(values).tolist()
    assert int(bins.count(values).sum()) == int(np.isfinite(values).sum())


def test_accepts_lists_and_integer_arrays() -> None:
    assert count_numeric([1, 2, 3, 4], [2, 3]).tolist() == [2, 1, 1]
    assert assign_numeric(np.array([1, 2, 3, 4], dtype=np.int64), EDGES).tolist() == [0, 1, 2, 3]


def test_quantile_bins_hold_about_equal_reference_mass() -> None:
    values = np.random.default_rng(7).normal(10.0, 3.0, size=100_000)

    bins = numeric_bins(values, n_bins=20)

    assert bins.edges.size == 19
    assert (np.diff(bins.edges) > 0).all()
    assert bins.total == values.size
    assert np.allclose(bins.proportions(), 0.05, atol=0.001)


def test_skewed_discrete_column_gets_unique_edges_and_no_empty_bin() -> None:
    rng = np.random.default_rng(3)
    values = np.where(rng.random(50_000) < 0.8, 0, rng.integers(1, 6, size=50_000))

    bins = numeric_bins(values, n_bins=20)

    assert bins.edges.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # 5 (the max) is not a cut point
    assert (bins.counts > 0).all()
    assert bins.counts.tolist() == [int((values == v).sum()) for v in range(6)]


def test_constant_column_gets_one_cut_point() -> None:
    bins = numeric_bins(np.full(1_000, 4.2))

    assert bins.edges.tolist() == [4.2]
    assert bins.counts.tolist() == [1_000, 0]
    assert bins.assign([4.2, 4.3, 4.1]).tolist() == [0, 1, 0]


def test_reference_bins_ignore_non_finite_values() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, np.nan, np.inf, -np.inf] * 10)

    bins = numeric_bins(values, n_bins=4)

    assert bins.total == 40
    assert np.isfinite(bins.edges).all()


def test_a_column_without_finite_values_cannot_be_binned() -> None:
    with pytest.raises(ValueError, match="without finite values"):
        numeric_bins(np.array([np.nan, np.inf]))
    with pytest.raises(ValueError, match="at least 2"):
        quantile_edges(np.arange(10.0), n_bins=1)


def test_numeric_bins_round_trip_through_json() -> None:
    bins = numeric_bins(np.random.default_rng(0).exponential(size=1_000), n_bins=8)

    data = json.loads(json.dumps(bins.to_json(), allow_nan=False))
    restored = NumericBins.from_json(data)

    assert data["kind"] == "numeric"
    assert len(data["counts"]) == len(data["edges"]) + 1
    assert restored == bins
    assert bins_from_json(data) == bins
    assert restored.count([0.0, 100.0]).tolist() == bins.count([0.0, 100.0]).tolist()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"kind": "numeric", "edges": [2.0, 1.0], "counts": [1, 1, 1]}, "strictly increasing"),
        ({"kind": "numeric", "edges": [1.0, 1.0], "counts": [1, 1, 1]}, "strictly increasing"),
        ({"kind": "numeric", "edges": [1.0], "counts": [1, 1, 1]}, "need 2 counts"),
        ({"kind": "numeric", "edges": [1.0], "counts": [1, -1]}, "non-negative"),
        ({"kind": "numeric", "edges": [float("nan")], "counts": [1, 1]}, "list of numbers"),
        ({"kind": "numeric", "edges": [], "counts": [1]}, "at least one edge"),
        ({"kind": "numeric", "edges": ["1"], "counts": [1, 1]}, "list of numbers"),
        ({"kind": "categorical", "edges": [1.0], "counts": [1, 1]}, "not numeric"),
    ],
)
def test_malformed_numeric_json_is_refused(data: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        NumericBins.from_json(data)


def test_categorical_bins_keep_the_most_frequent_and_count_the_rest_as_other() -> None:
    values = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 1 + [None, float("nan")]

    bins = categorical_bins(values, max_categories=2)

    # ties broken by value, so the result does not depend on input order
    assert bins.categories == ("a", "b")
    assert bins.counts.tolist() == [5, 3]
    assert bins.other == 4
    assert bins.total == 12
    assert bins.labels == ["a", "b", OTHER]


def test_categorical_bins_respect_max_categories() -> None:
    values = [f"v{i:03d}" for i in range(MAX_CATEGORIES + 5) for _ in range(2)]

    bins = categorical_bins(np.array(values))

    assert len(bins.categories) == MAX_CATEGORIES
    assert bins.other == 10


def test_live_counts_split_known_other_and_unseen() -> None:
    complete = categorical_bins(["basic", "pro", "pro"])
    live = ["pro", "basic", "gold", "gold", None, "pro"]

    # The reference had every value it kept, so "gold" is a value it never saw.
    assert complete.count(live).tolist() == [2, 1, 0, 2]
    assert complete.reference_counts().tolist() == [2, 1, 0, 0]
    assert count_categorical(live, ["pro", "basic"]).tolist() == [2, 1, 0, 2]

    # With an other bucket, a value outside the top categories may be from the reference's tail.
    truncated = categorical_bins(["pro", "pro", "basic", "free"], max_categories=1)
    assert truncated.count(live).tolist() == [2, 3, 0]
    assert count_categorical(live, ["pro"], has_other=True).tolist() == [2, 3, 0]


def test_boolean_categories_round_trip_through_json() -> None:
    bins = categorical_bins(np.array([True, False, True]))
    data = json.loads(json.dumps(bins.to_json()))

    assert data == {
        "kind": "categorical",
        "categories": [True, False],
        "counts": [2, 1],
        "other": 0,
    }
    restored = CategoricalBins.from_json(data)
    assert restored == bins
    assert bins_from_json(data) == bins
    assert restored.count([False, False, None]).tolist() == [0, 2, 0, 0]


def test_malformed_categorical_json_is_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        CategoricalBins.from_json(
            {"kind": "categorical", "categories": ["a", "a"], "counts": [1, 1], "other": 0}
        )
    with pytest.raises(ValueError, match="as many counts"):
        CategoricalBins.from_json(
            {"kind": "categorical", "categories": ["a"], "counts": [1, 1], "other": 0}
        )
    with pytest.raises(ValueError, match="'other'"):
        CategoricalBins.from_json(
            {"kind": "categorical", "categories": ["a"], "counts": [1], "other": -1}
        )
    with pytest.raises(ValueError, match="unknown bins kind"):
        bins_from_json({"kind": "histogram"})


def test_counting_a_large_batch_is_fast() -> None:
    rng = np.random.default_rng(0)
    numeric = numeric_bins(rng.normal(size=100_000))
    categorical = categorical_bins(rng.choice(["a", "b", "c", "d"], size=100_000))
    live = rng.normal(size=1_000_000)
    labels = rng.choice(["a", "b", "c", "e"], size=1_000_000)

    start = time.perf_counter()
    numeric.count(live)
    categorical.count(labels)
    elapsed = time.perf_counter() - start

    print(f"binned 1M numeric + 1M categorical values in {elapsed * 1000:.0f} ms")
    assert elapsed < 2.0
