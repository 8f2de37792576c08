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

PSI and Jensen-Shannon are reported for every column as well, and either (or any test that
fits the column) can be chosen per deployment or per feature instead (`drift_settings`); PSI
drifts at 0.1 by default (Evidently's; 0.2 is the other usual cut, "significant shift").

Thresholds come, per feature, from the query, the deployment's stored settings, the
reference's own chunks (``method: reference_chunks``, NannyML's mean + 3 std; see
`konan.registry.drift_statistics`) or the test's default; each feature says which
(``threshold_source``) and what the threshold is compared with (``threshold_on``).

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
from sqlalchemy.orm import Session

from konan.core.errors import InvalidInput, NotFound
from konan.deployments.orm import Deployment, DeploymentRevision
from konan.monitoring import drift_settings
from konan.monitoring.drift_settings import DEFAULT_DRIFT_SHARE, DriftSettings, Method
from konan.monitoring.health import resolve_window
from konan.monitoring.orm import FeatureHistogram
from konan.monitoring.rollups import HOUR, MISSING_BIN, PREDICTION, version_bins_from
from konan.registry.binning import Bins
from konan.registry.drift_statistics import (
    CHUNK_THRESHOLD_ON,
    P_VALUE_THRESHOLD,
    PSI_EPSILON,
    PVALUE_TESTS,
    ThresholdOn,
    bin_points,
    chi_square,
    column_kind,
    compute,
    js_distance,
    ks_binned,
    proportion_z,
    psi,
    reference_counts,
    wasserstein_normed,
)
from konan.registry.drift_statistics import Test as Test
from konan.registry.orm import DatasetVersion, ModelVersion

__all__ = [
    "DEFAULT_DRIFT_SHARE",
    "PSI_EPSILON",
    "bin_points",
    "chi_square",
    "column_kind",
    "js_distance",
    "ks_binned",
    "proportion_z",
    "psi",
    "reference_counts",
    "wasserstein_normed",
]

SMALL_REFERENCE = 1000  # Evidently: at most this many reference rows -> statistical tests
DISTANCE_THRESHOLD = 0.1
PSI_THRESHOLD = 0.1  # Evidently's default for PSI as a test; 0.2 ("significant") is also usual

ThresholdSource = Literal["query", "feature", "deployment", "reference_chunks", "default"]


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
    threshold_source: ThresholdSource = "default"
    threshold_on: ThresholdOn = "p_value"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "test": self.test,
            "statistic": _json_float(self.statistic),
            "p_value": _json_float(self.p_value),
            "distance": _json_float(self.distance),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "threshold_on": self.threshold_on,
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


def choose_test(bins: Bins, reference_size: int) -> Test:
    """Evidently's choice by column kind and reference size."""
    kind = column_kind(bins)
    if reference_size <= SMALL_REFERENCE:
        return {"numeric": "ks", "categorical": "chisquare", "binary": "z"}[kind]  # type: ignore[return-value]
    return "wasserstein" if kind == "numeric" else "jensenshannon"


def default_threshold(test: Test) -> float:
    if test in PVALUE_TESTS:
        return P_VALUE_THRESHOLD
    return PSI_THRESHOLD if test == "psi" else DISTANCE_THRESHOLD


def feature_drift(
    name: str,
    bins: Bins,
    current: npt.ArrayLike,
    *,
    current_missing: int = 0,
    column_stats: Mapping[str, Any] | None = None,
    threshold: float | None = None,
    test: Test | None = None,
    threshold_on: ThresholdOn | None = None,
    threshold_source: ThresholdSource | None = None,
) -> FeatureDrift:
    """Drift of one column: ``current`` are live counts aligned with `reference_counts`.

    ``test`` defaults to Evidently's choice, ``threshold`` to the test's default. The threshold
    is compared with the p-value for ks/chisquare/z and with the distance otherwise, unless
    ``threshold_on`` says ``"statistic"`` (a KS statistic threshold from reference chunks:
    drift when the statistic is above it)."""
    ref = reference_counts(bins)
    cur = np.asarray(current, dtype=np.int64)
    if cur.size != ref.size:
        raise ValueError(f"{name}: {cur.size} live bins against {ref.size} reference bins")
    reference_size = int(ref.sum())
    test = test or choose_test(bins, reference_size)
    limit = default_threshold(test) if threshold is None else float(threshold)
    source: ThresholdSource = threshold_source or ("default" if threshold is None else "query")
    on: ThresholdOn = threshold_on or ("p_value" if test in PVALUE_TESTS else "distance")
    kind = column_kind(bins)
    current_size = int(cur.sum())
    if current_size == 0 or reference_size == 0:
        return FeatureDrift(
            name, kind, None, None, None, None, limit, False, None, None,
            reference_size, current_size, current_missing, source, on,
        )  # fmt: skip
    statistic, p_value = compute(test, bins, ref, cur, column_stats)
    distance = None if test in PVALUE_TESTS else statistic
    if on == "p_value":
        assert p_value is not None
        drifted = p_value < limit
    elif on == "statistic":
        drifted = statistic > limit
    else:
        drifted = statistic >= limit
    return FeatureDrift(
        name, kind, test, statistic, p_value, distance, limit, drifted,
        psi(ref, cur), js_distance(ref, cur), reference_size, current_size, current_missing,
        source, on,
    )  # fmt: skip


def dataset_drift(features: list[FeatureDrift], share: float = DEFAULT_DRIFT_SHARE) -> bool:
    """True when at least ``share`` of the columns with live values drifted."""
    tested = [f for f in features if f.test is not None]
    if not tested:
        return False
    return sum(f.drifted for f in tested) / len(tested) >= share


# ---- thresholds per feature -----------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    test: Test
    threshold: float | None  # None: the test's default
    source: ThresholdSource
    on: ThresholdOn | None = None


def chunk_threshold(column_stats: Mapping[str, Any] | None, test: Test) -> float | None:
    """The reference-chunk threshold of ``test`` stored at registration, if any."""
    entry = ((column_stats or {}).get("chunk_thresholds") or {}).get("thresholds") or {}
    found = entry.get(test) if isinstance(entry, Mapping) else None
    value = found.get("threshold") if isinstance(found, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def chunk_skip_reason(column_stats: Mapping[str, Any] | None) -> str:
    entry = (column_stats or {}).get("chunk_thresholds")
    if isinstance(entry, Mapping) and isinstance(entry.get("skipped"), str):
        return str(entry["skipped"])
    if entry is None:
        return "its reference was profiled before chunk thresholds were computed"
    return "no chunk threshold for its test"


def choose(
    name: str,
    bins: Bins,
    column_stats: Mapping[str, Any] | None,
    settings: DriftSettings,
    method: Method,
    *,
    query_threshold: float | None,
    query_feature_thresholds: Mapping[str, float],
    notes: list[str],
) -> Choice:
    """Test and threshold of one feature: query > stored feature > reference chunks (method
    reference_chunks) > stored deployment threshold > default."""
    test = drift_settings.resolve_test(
        name, bins, settings, choose_test(bins, int(reference_counts(bins).sum()))
    )
    if name in query_feature_thresholds:
        return Choice(test, query_feature_thresholds[name], "query")
    if query_threshold is not None:
        return Choice(test, query_threshold, "query")
    if name in settings.feature_thresholds:
        return Choice(test, settings.feature_thresholds[name], "feature")
    if method == "reference_chunks":
        value = chunk_threshold(column_stats, test)
        if value is not None:
            return Choice(test, value, "reference_chunks", CHUNK_THRESHOLD_ON[test])
        fallback = "the deployment's threshold" if settings.threshold is not None else "the default"
        notes.append(
            f"{name}: no reference-chunk threshold ({chunk_skip_reason(column_stats)}); "
            f"{fallback} applies"
        )
    if settings.threshold is not None:
        return Choice(test, settings.threshold, "deployment")
    return Choice(test, None, "default")


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
    drift_share: float | None = None,
    method: Method | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Drift of every feature (and the prediction) of one model version over ``[start, end)``,
    at hour resolution (the window is widened to whole hours). Arguments override the
    deployment's stored settings, which override the defaults."""
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
    query_thresholds = dict(feature_thresholds or {})
    unknown = set(query_thresholds) - set(version_bins.features)
    if unknown:
        raise InvalidInput(f"no feature {', '.join(sorted(unknown))} in {label}")

    stored, note = drift_settings.stored(deployment)
    settings = stored.drift
    notes = [note] if note else []
    stale = sorted(
        (set(settings.feature_thresholds) | set(settings.tests)) - set(version_bins.features)
    )
    if stale:
        notes.append(
            f"stored settings name features {label} does not have ({', '.join(stale)}); "
            "they are ignored"
        )
    chosen_method: Method = method or settings.method
    share = drift_share if drift_share is not None else settings.drift_share
    stats_by_column = dict(reference.stats or {})
    if version_bins.prediction_source == "prediction_profile":
        # The dataset's own column of that name (if any) is not what the bins describe.
        stats_by_column.pop(PREDICTION, None)
    choices = {
        name: choose(
            name,
            bins,
            stats_by_column.get(name),
            settings,
            chosen_method,
            query_threshold=threshold,
            query_feature_thresholds=query_thresholds,
            notes=notes,
        )
        for name, bins in version_bins.features.items()
    }
    problems = [
        problem
        for name, c in choices.items()
        if c.source == "query" and c.threshold is not None
        for problem in [drift_settings.threshold_problem(name, c.test, c.threshold)]
        if problem is not None
    ]
    if problems:
        raise InvalidInput("; ".join(problems))

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
    features = [
        feature_drift(
            name,
            bins,
            current[name],
            current_missing=missing[name],
            column_stats=stats_by_column.get(name),
            threshold=choices[name].threshold,
            test=choices[name].test,
            threshold_on=choices[name].on,
            threshold_source=choices[name].source,
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
        "method": chosen_method,
        "drift_share": share,
        "dataset_drift": dataset_drift(inputs, share),
        "features_tested": len(tested),
        "features_drifted": len(drifted),
        "share_drifted": len(drifted) / len(tested) if tested else 0.0,
        "features": [f.as_dict() for f in inputs],
        "prediction": prediction.as_dict() if prediction is not None else None,
        "prediction_reference": version_bins.prediction_source,
        "notes": notes,
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


def champion_features(session: Session, deployment: Deployment) -> dict[str, Bins] | None:
    """The champion's features with their reference bins (None: no champion with reference
    data), for checking settings."""
    try:
        model_version = _model_version(session, deployment, None)
    except NotFound:
        return None
    if model_version.reference_dataset_version_id is None:
        return None
    reference = session.get(DatasetVersion, model_version.reference_dataset_version_id)
    if reference is None:
        return None
    return dict(version_bins_from(model_version, reference).features) or None


def default_test_of(bins: Bins) -> Test:
    return choose_test(bins, int(reference_counts(bins).sum()))
