"""Drift per feature (and the prediction) from the hourly histograms kept at ingest.

Everything here works on bin counts: the reference's (``DatasetVersion.reference_bins``) and
the live window's (summed `FeatureHistogram` rows), so a query costs O(features x bins) no
matter how many requests were logged.

Test choice follows Evidently's defaults:

==========================  ======================  ===========================================
reference size              column                  test (drift when)
==========================  ======================  ===========================================
<= 1000                     numeric                 two-sample KS (p < 0.05)
<= 1000                     categorical             chi-square on the 2 x K table (p < 0.05)
<= 1000                     binary (2 categories)   two-proportion Z-test (p < 0.05)
> 1000                      numeric                 Wasserstein / reference std (>= 0.1)
> 1000                      categorical or binary   Jensen-Shannon distance (>= 0.1)
==========================  ======================  ===========================================

PSI and Jensen-Shannon are reported for every column as well.

KS on binned data: both samples are known only up to their bin, so the empirical CDFs are
compared at the bin edges; the statistic is then a lower bound of the raw-data KS statistic
(exact when every value sits on an edge). With the registry's 20 equal-mass bins the bound is
within 1/20 of the raw statistic; the p-value is Smirnov's asymptotic one, as
``scipy.stats.ks_2samp(method="asymp")`` computes it, and equals what ks_2samp gives on the
values put at their bins' upper edges (tests check this).

Wasserstein on binned data puts each bin's mass at its midpoint (the outer bins at the middle of
the edge and the reference min/max), the same on both sides. That over-states shifts that move
mass into the outer bins (by about 20% for a half-std shift of a normal column), so the 0.1
threshold fires slightly early rather than late.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sqlalchemy.orm import Session

from konan.core.errors import InvalidInput, NotFound
from konan.deployments.orm import Deployment, DeploymentRevision
from konan.monitoring.health import resolve_window
from konan.monitoring.orm import FeatureHistogram
from konan.monitoring.rollups import HOUR, MISSING_BIN, PREDICTION, version_bins_from
from konan.registry.binning import Bins, CategoricalBins, NumericBins
from konan.registry.orm import DatasetVersion, ModelVersion

SMALL_REFERENCE = 1000  # Evidently: at most this many reference rows -> statistical tests
P_VALUE_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
PSI_THRESHOLD = 0.1  # reported; PSI > 0.1 is "some shift", > 0.25 "major" by convention
DEFAULT_DRIFT_SHARE = 0.5
PSI_EPSILON = 1e-4  # stands in for an empty bin, as Evidently does

Test = Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon"]
FloatArray = npt.NDArray[np.float64]

_PVALUE_TESTS: frozenset[str] = frozenset({"ks", "chisquare", "z"})


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


# ---- one feature --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: Literal["numeric", "categorical", "binary"]
    test: Test | None  # None: no live values in the window
    statistic: float | None
    p_value: float | None
    distance: float | None
    threshold: float
    drifted: bool
    psi: float | None
    jensenshannon: float | None
    reference_count: int
    current_count: int
    current_missing: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "test": self.test,
            "statistic": _json_float(self.statistic),
            "p_value": _json_float(self.p_value),
            "distance": _json_float(self.distance),
            "threshold": self.threshold,
            "drifted": self.drifted,
            "psi": _json_float(self.psi),
            "jensenshannon": _json_float(self.jensenshannon),
            "reference_count": self.reference_count,
            "current_count": self.current_count,
            "current_missing": self.current_missing,
        }


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


def column_kind(bins: Bins) -> Literal["numeric", "categorical", "binary"]:
    if isinstance(bins, CategoricalBins):
        return "binary" if len(bins.categories) == 2 and bins.other == 0 else "categorical"
    return "numeric"


def choose_test(bins: Bins, reference_size: int) -> Test:
    kind = column_kind(bins)
    if reference_size <= SMALL_REFERENCE:
        return {"numeric": "ks", "categorical": "chisquare", "binary": "z"}[kind]  # type: ignore[return-value]
    return "wasserstein" if kind == "numeric" else "jensenshannon"


def default_threshold(test: Test) -> float:
    return P_VALUE_THRESHOLD if test in _PVALUE_TESTS else DISTANCE_THRESHOLD


def reference_counts(bins: Bins) -> npt.NDArray[np.int64]:
    """The reference over the same bins live counts use (categorical: + other, unseen)."""
    if isinstance(bins, CategoricalBins):
        return bins.reference_counts()
    return np.asarray(bins.counts, dtype=np.int64)


def feature_drift(
    name: str,
    bins: Bins,
    current: npt.ArrayLike,
    *,
    current_missing: int = 0,
    column_stats: Mapping[str, Any] | None = None,
    threshold: float | None = None,
) -> FeatureDrift:
    """Drift of one column: ``current`` are live counts aligned with `reference_counts`."""
    ref = reference_counts(bins)
    cur = np.asarray(current, dtype=np.int64)
    if cur.size != ref.size:
        raise ValueError(f"{name}: {cur.size} live bins against {ref.size} reference bins")
    reference_size = int(ref.sum())
    test = choose_test(bins, reference_size)
    limit = default_threshold(test) if threshold is None else float(threshold)
    kind = column_kind(bins)
    current_size = int(cur.sum())
    if current_size == 0 or reference_size == 0:
        return FeatureDrift(
            name, kind, None, None, None, None, limit, False, None, None,
            reference_size, current_size, current_missing,
        )  # fmt: skip
    statistic: float | None = None
    p_value: float | None = None
    distance: float | None = None
    if test == "ks":
        statistic, p_value = ks_binned(ref, cur)
    elif test == "chisquare":
        statistic, p_value = chi_square(ref, cur)
    elif test == "z":
        statistic, p_value = proportion_z(ref, cur)
    elif test == "wasserstein":
        assert isinstance(bins, NumericBins)
        info = column_stats or {}
        points = bin_points(bins, _num(info.get("min")), _num(info.get("max")))
        distance = wasserstein_normed(points, ref, cur, _num(info.get("std")))
        statistic = distance
    else:
        distance = statistic = js_distance(ref, cur)
    if p_value is not None:
        drifted = p_value < limit
    else:
        assert distance is not None
        drifted = distance >= limit
    return FeatureDrift(
        name, kind, test, statistic, p_value, distance, limit, drifted,
        psi(ref, cur), js_distance(ref, cur), reference_size, current_size, current_missing,
    )  # fmt: skip


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def dataset_drift(features: list[FeatureDrift], share: float = DEFAULT_DRIFT_SHARE) -> bool:
    """True when at least ``share`` of the columns with live values drifted."""
    tested = [f for f in features if f.test is not None]
    if not tested:
        return False
    return sum(f.drifted for f in tested) / len(tested) >= share


# ---- the report over a window -------------------------------------------------------------------

DRIFT_MAX_SPAN_DAYS = 400


def drift_report(
    session: Session,
    deployment: Deployment,
    *,
    version: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    threshold: float | None = None,
    feature_thresholds: Mapping[str, float] | None = None,
    drift_share: float = DEFAULT_DRIFT_SHARE,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Drift of every feature (and the prediction) of one model version over ``[start, end)``,
    at hour resolution (the window is widened to whole hours)."""
    window = resolve_window(start, end, now=now, max_span=timedelta(days=DRIFT_MAX_SPAN_DAYS))
    model_version = _model_version(session, deployment, version)
    label = f"model version {model_version.version} of deployment {deployment.name!r}"
    if model_version.reference_dataset_version_id is None:
        raise InvalidInput(
            f"{label} has no reference dataset, so there is nothing to compare live traffic to; "
            "register the version with reference_data to monitor drift"
        )
    reference = session.get(DatasetVersion, model_version.reference_dataset_version_id)
    assert reference is not None, "foreign key"
    version_bins = version_bins_from(model_version, reference)
    if not version_bins.features:
        raise InvalidInput(f"the reference dataset of {label} has no usable bins for its features")
    unknown = set(feature_thresholds or {}) - set(version_bins.features)
    if unknown:
        raise InvalidInput(f"no feature {', '.join(sorted(unknown))} in {label}")

    first = window.start_epoch // HOUR * HOUR
    last = -(-window.end_epoch // HOUR) * HOUR
    h = FeatureHistogram
    rows = session.execute(
        sa.select(h.feature, h.bin, sa.func.sum(h.count))
        .where(
            h.deployment_id == deployment.id,
            h.model_version_id == model_version.id,
            h.bucket_start >= first,
            h.bucket_start < window.end_epoch,
        )
        .group_by(h.feature, h.bin)
    ).all()
    current: dict[str, npt.NDArray[np.int64]] = {
        name: np.zeros(reference_counts(bins).size, dtype=np.int64)
        for name, bins in version_bins.features.items()
    }
    missing: dict[str, int] = dict.fromkeys(current, 0)
    for feature, index, count in rows:
        if feature not in current:
            continue
        if index == MISSING_BIN:
            missing[feature] += int(count)
        elif 0 <= index < current[feature].size:
            current[feature][index] += int(count)
    overrides = dict(feature_thresholds or {})
    stats_by_column = reference.stats or {}
    features = [
        feature_drift(
            name,
            bins,
            current[name],
            current_missing=missing[name],
            column_stats=stats_by_column.get(name),
            threshold=overrides.get(name, threshold),
        )
        for name, bins in version_bins.features.items()
    ]
    inputs = [f for f in features if f.name != PREDICTION]
    tested = [f for f in inputs if f.test is not None]
    drifted = [f for f in tested if f.drifted]
    prediction = next((f for f in features if f.name == PREDICTION), None)
    return {
        "deployment": deployment.name,
        "model_version": model_version.version,
        "reference_dataset_version_id": reference.id,
        "start": datetime.fromtimestamp(first, UTC).isoformat(),
        "end": datetime.fromtimestamp(last, UTC).isoformat(),
        "drift_share": drift_share,
        "dataset_drift": dataset_drift(inputs, drift_share),
        "features_tested": len(tested),
        "features_drifted": len(drifted),
        "share_drifted": len(drifted) / len(tested) if tested else 0.0,
        "features": [f.as_dict() for f in inputs],
        "prediction": prediction.as_dict() if prediction is not None else None,
    }


def _model_version(session: Session, deployment: Deployment, version: int | None) -> ModelVersion:
    if version is None:
        revision = session.scalars(
            sa.select(DeploymentRevision).where(
                DeploymentRevision.deployment_id == deployment.id,
                DeploymentRevision.revision == deployment.current_revision,
            )
        ).one_or_none()
        found = session.get(ModelVersion, revision.champion_version_id) if revision else None
    else:
        found = session.scalars(
            sa.select(ModelVersion).where(
                ModelVersion.model_id == deployment.model_id, ModelVersion.version == version
            )
        ).one_or_none()
    if found is None:
        what = "a champion" if version is None else f"model version {version}"
        raise NotFound(f"deployment {deployment.name!r} has no {what}")
    return found
