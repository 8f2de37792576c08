"""Drift statistics on bin counts, and the reference-chunk thresholds taken at registration.

Both the registry (which derives thresholds from a reference's own variability when a dataset
version is profiled) and monitoring (which tests live windows) compute the same statistics on
the same bins, so they live here, below both. Pure numpy and scipy.

Reference-chunk thresholds (NannyML's idea)
    The reference is cut into `CHUNKS` contiguous chunks of rows (only when each holds at least
    `MIN_CHUNK_ROWS` rows). Each chunk's statistic against the *whole* reference, over the same
    bins live traffic is counted into, measures how much the reference varies within itself.
    The threshold is ``mean + 3 std`` of the chunk statistics for distances and the KS
    statistic (drift when a live value goes above it), and ``mean - 3 std`` for p-values (drift
    when a live p-value goes below it), clipped: distances to at least `MIN_DISTANCE_THRESHOLD`,
    p-values into ``[P_VALUE_FLOOR, 0.05]``. Chunk p-values spread over most of ``[0, 1]``, so
    for chi-square and Z the floor usually applies; KS is thresholded on its statistic for that
    reason (as NannyML does).

    The thresholds are calibrated for windows of about one chunk's size: a statistic's noise
    shrinks as the live window grows, so a much larger window is judged a little leniently, a
    much smaller one a little strictly. Chunks follow the file's row order: a reference sorted
    by a feature makes its chunks differ a lot, and that feature's thresholds high.

Stored per column in ``DatasetVersion.stats[column]["chunk_thresholds"]``::

    {"chunks": 10, "chunk_rows": 500, "multiplier": 3.0,
     "thresholds": {"ks": {"on": "statistic", "mean": .., "std": .., "threshold": ..},
                    "wasserstein": {"on": "distance", ...}, "psi": {...},
                    "jensenshannon": {...}}}            # numeric
    # categorical: "chisquare" (on p_value), "psi", "jensenshannon"; binary also "z"
    {"skipped": "the reference has 640 rows; 10 chunks of at least 100 rows need 1000"}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.spatial.distance import jensenshannon

from konan.registry.binning import Bins, CategoricalBins, NumericBins

PSI_EPSILON = 1e-4  # stands in for an empty bin, as Evidently does
P_VALUE_THRESHOLD = 0.05

CHUNKS = 10
MIN_CHUNK_ROWS = 100
STD_MULTIPLIER = 3.0
P_VALUE_FLOOR = 1e-3
MIN_DISTANCE_THRESHOLD = 1e-6
JS_MAX = math.sqrt(math.log(2))  # Jensen-Shannon distance with natural logs is at most this

Test = Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"]
Kind = Literal["numeric", "categorical", "binary"]
ThresholdOn = Literal["p_value", "distance", "statistic"]
FloatArray = npt.NDArray[np.float64]

PVALUE_TESTS: frozenset[str] = frozenset({"ks", "chisquare", "z"})
TESTS_BY_KIND: dict[Kind, tuple[Test, ...]] = {
    "numeric": ("ks", "wasserstein", "psi", "jensenshannon"),
    "categorical": ("chisquare", "psi", "jensenshannon"),
    "binary": ("chisquare", "z", "psi", "jensenshannon"),
}
# What a chunk threshold of each test is compared with.
CHUNK_THRESHOLD_ON: dict[Test, ThresholdOn] = {
    "ks": "statistic",
    "chisquare": "p_value",
    "z": "p_value",
    "wasserstein": "distance",
    "jensenshannon": "distance",
    "psi": "distance",
}


# ---- the statistics ---------------------------------------------------------------------------


def _shares(counts: npt.ArrayLike) -> FloatArray:
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else np.zeros_like(array)


def psi(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Population stability index: sum((c - r) * ln(c / r)) over shares; an empty bin counts as
    PSI_EPSILON so the log stays finite."""
    r = _shares(reference_counts)
    c = _shares(current_counts)
    r = np.where(r == 0, PSI_EPSILON, r)
    c = np.where(c == 0, PSI_EPSILON, c)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (natural log, so in [0, sqrt(ln 2)]) between the two shares."""
    r = _shares(reference_counts)
    c = _shares(current_counts)
    if r.sum() == 0 or c.sum() == 0:
        return 0.0
    return float(jensenshannon(r, c))


def ks_binned(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike
) -> tuple[float, float]:
    """Two-sample KS on counts over the same ordered bins: (statistic, asymptotic p-value)."""
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    n, m = r.sum(), c.sum()
    if n == 0 or m == 0:
        return 0.0, 1.0
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    big, small = max(n, m), min(n, m)
    en = big * small / (big + small)
    p = float(stats.kstwo.sf(d, np.round(en)))
    return d, min(max(p, 0.0), 1.0)


def chi_square(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike
) -> tuple[float, float]:
    """Chi-square test of homogeneity on the 2 x K table (empty columns dropped)."""
    table = np.vstack(
        [np.asarray(reference_counts, np.float64), np.asarray(current_counts, np.float64)]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def proportion_z(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike
) -> tuple[float, float]:
    """Two-proportion Z-test on the share of the first category (pooled variance)."""
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    n1, n2 = r.sum(), c.sum()
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    p1, p2 = r[0] / n1, c[0] / n2
    pooled = (r[0] + c[0]) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 0.0, 1.0
    z = float((p1 - p2) / math.sqrt(var))
    return z, float(2 * stats.norm.sf(abs(z)))


def bin_points(bins: NumericBins, low: float | None, high: float | None) -> FloatArray:
    """One representative value per numeric bin: midpoints, the outer bins at the middle of
    the edge and the reference min/max (or half a neighbouring width out)."""
    edges = bins.edges.astype(np.float64)
    if edges.size == 1:
        width = max(abs(edges[0]) * 0.01, 1e-9)
    else:
        width = float(np.median(np.diff(edges)))
    lo = float(low) if low is not None and low < edges[0] else edges[0] - width
    hi = float(high) if high is not None and high > edges[-1] else edges[-1] + width
    inner = (edges[:-1] + edges[1:]) / 2
    return np.concatenate([[(lo + edges[0]) / 2], inner, [(edges[-1] + hi) / 2]])


def wasserstein_normed(
    points: FloatArray,
    reference_counts: npt.ArrayLike,
    current_counts: npt.ArrayLike,
    reference_std: float | None,
) -> float:
    """Wasserstein distance between the binned samples, divided by the reference std."""
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    if r.sum() == 0 or c.sum() == 0:
        return 0.0
    distance = float(stats.wasserstein_distance(points, points, r, c))
    std = reference_std
    if std is None or not math.isfinite(std) or std <= 0:
        mean = float(np.average(points, weights=r))
        std = math.sqrt(float(np.average((points - mean) ** 2, weights=r)))
    if std <= 0:
        return 0.0 if distance == 0 else math.inf
    return distance / std


# ---- per column -------------------------------------------------------------------------------


def column_kind(bins: Bins) -> Kind:
    if isinstance(bins, CategoricalBins):
        return "binary" if len(bins.categories) == 2 and bins.other == 0 else "categorical"
    return "numeric"


def reference_counts(bins: Bins) -> npt.NDArray[np.int64]:
    """The reference over the same bins live counts use (categorical: + other, unseen)."""
    if isinstance(bins, CategoricalBins):
        return bins.reference_counts()
    return np.asarray(bins.counts, dtype=np.int64)


def number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def compute(
    test: Test,
    bins: Bins,
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    column_stats: Mapping[str, Any] | None = None,
) -> tuple[float, float | None]:
    """(statistic, p-value or None) of ``test`` between counts over ``bins``. For distances the
    statistic is the distance."""
    if test == "ks":
        return ks_binned(reference, current)
    if test == "chisquare":
        return chi_square(reference, current)
    if test == "z":
        return proportion_z(reference, current)
    if test == "wasserstein":
        if not isinstance(bins, NumericBins):
            raise ValueError("Wasserstein distance needs numeric bins")
        info = column_stats or {}
        points = bin_points(bins, number(info.get("min")), number(info.get("max")))
        return wasserstein_normed(points, reference, current, number(info.get("std"))), None
    if test == "psi":
        return psi(reference, current), None
    return js_distance(reference, current), None


def chunk_thresholds(
    bins: Bins,
    chunk_counts: Sequence[npt.ArrayLike],
    column_stats: Mapping[str, Any] | None = None,
    *,
    chunk_rows: int,
) -> dict[str, Any]:
    """The ``chunk_thresholds`` entry of one column from its chunks' counts (aligned with
    `reference_counts`)."""
    reference = reference_counts(bins)
    usable = [np.asarray(c, dtype=np.int64) for c in chunk_counts]
    usable = [c for c in usable if c.sum() > 0]
    if len(usable) < 2:
        return {"skipped": f"only {len(usable)} of {len(chunk_counts)} chunks hold values"}
    thresholds: dict[str, Any] = {}
    for test in TESTS_BY_KIND[column_kind(bins)]:
        on = CHUNK_THRESHOLD_ON[test]
        values = []
        for counts in usable:
            statistic, p_value = compute(test, bins, reference, counts, column_stats)
            values.append(p_value if on == "p_value" else statistic)
        array = np.asarray(values, dtype=np.float64)
        if not np.isfinite(array).all():
            continue
        mean, std = float(array.mean()), float(array.std(ddof=1))
        if on == "p_value":
            limit = min(max(mean - STD_MULTIPLIER * std, P_VALUE_FLOOR), P_VALUE_THRESHOLD)
        else:
            limit = max(mean + STD_MULTIPLIER * std, MIN_DISTANCE_THRESHOLD)
            if test == "jensenshannon":
                limit = min(limit, JS_MAX)
            elif test == "ks":
                limit = min(limit, 1.0)
        thresholds[test] = {"on": on, "mean": mean, "std": std, "threshold": limit}
    return {
        "chunks": len(chunk_counts),
        "chunk_rows": chunk_rows,
        "multiplier": STD_MULTIPLIER,
        "thresholds": thresholds,
    }


def chunk_bounds(row_count: int, chunks: int = CHUNKS) -> list[int] | str:
    """Row offsets of the chunk boundaries (``chunks + 1`` of them), or why there are none."""
    if row_count < chunks * MIN_CHUNK_ROWS:
        return (
            f"the reference has {row_count} rows; {chunks} chunks of at least "
            f"{MIN_CHUNK_ROWS} rows need {chunks * MIN_CHUNK_ROWS}"
        )
    return [row_count * i // chunks for i in range(chunks + 1)]
