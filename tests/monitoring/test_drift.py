"""Drift statistics against hand-computed and scipy values, and drift found (or not) from the
rollups on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sqlalchemy.orm import Session, sessionmaker

from konan.core.errors import InvalidInput
from konan.db.engine import unit_of_work
from konan.deployments.orm import Deployment
from konan.monitoring import drift
from konan.monitoring.ingest import ingest
from konan.monitoring.rollups import PREDICTION
from konan.registry.binning import CategoricalBins, NumericBins, categorical_bins, numeric_bins
from tests.factories import seed_deployment

from .test_rollups import (
    PLAN_P,
    PLANS,
    T0,
    records_from,
    reference_frame,
    seeded_with_reference,
)

# ---- the statistics ------------------------------------------------------------------------


def test_psi_matches_hand_computed_values() -> None:
    # shares 0.5/0.5 -> 0.25/0.75: (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5)
    assert drift.psi([50, 50], [25, 75]) == pytest.approx(0.274653, abs=1e-6)
    assert drift.psi([10, 20, 30], [10, 20, 30]) == 0.0
    # An empty live bin counts as 1e-4: (1e-4-0.5)ln(1e-4/0.5) + (1-0.5)ln(1/0.5)
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2.0)
    assert drift.psi([5, 5], [0, 8]) == pytest.approx(expected, rel=1e-12)


def test_jensen_shannon_matches_scipy_and_hand_values() -> None:
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(math.sqrt(math.log(2)))
    assert drift.js_distance([3, 3], [3, 3]) == 0.0
    r, c = [10, 30, 60], [20, 20, 60]
    assert drift.js_distance(r, c) == pytest.approx(
        float(jensenshannon(np.array(r) / 100, np.array(c) / 100))
    )
    # By hand: m = (0.15, 0.25, 0.6); JS^2 = (KL(p||m) + KL(q||m)) / 2
    p, q = np.array([0.1, 0.3, 0.6]), np.array([0.2, 0.2, 0.6])
    m = (p + q) / 2
    by_hand = math.sqrt((np.sum(p * np.log(p / m)) + np.sum(q * np.log(q / m))) / 2)
    assert drift.js_distance(r, c) == pytest.approx(by_hand)


def test_binned_ks_equals_scipy_on_values_at_the_bin_edges() -> None:
    rng = np.random.default_rng(1)
    bins = numeric_bins(rng.normal(0, 1, 800))
    live = rng.normal(0.3, 1, 1500)
    ref_counts, cur_counts = bins.counts, bins.count(live)
    points = np.append(bins.edges, bins.edges[-1] + 1)  # each bin at its upper edge
    want = stats.ks_2samp(
        np.repeat(points, ref_counts), np.repeat(points, cur_counts), method="asymp"
    )
    statistic, p_value = drift.ks_binned(ref_counts, cur_counts)
    assert statistic == pytest.approx(want.statistic)
    assert p_value == pytest.approx(want.pvalue, rel=1e-9)
    # 20 equal-mass bins: within 1/20 of the raw-data statistic.
    raw = stats.ks_2samp(rng.normal(0, 1, 800), live).statistic
    assert abs(statistic - raw) < 0.1


def test_chi_square_and_proportion_z_match_scipy_and_hand_values() -> None:
    statistic, p = drift.chi_square([40, 30, 30, 0, 0], [20, 40, 30, 0, 10])
    want = stats.chi2_contingency(np.array([[40, 30, 30, 0], [20, 40, 30, 10]]), correction=False)
    assert statistic == pytest.approx(want.statistic)
    assert p == pytest.approx(want.pvalue)
    # p1 = 0.6, p2 = 0.5, pooled 0.55, se = sqrt(0.55*0.45*(1/100+1/100))
    z, p = drift.proportion_z([60, 40], [50, 50])
    se = math.sqrt(0.55 * 0.45 * 0.02)
    assert z == pytest.approx(0.1 / se)
    assert p == pytest.approx(2 * (1 - stats.norm.cdf(0.1 / se)))


def test_binned_wasserstein_matches_scipy_on_the_bin_points() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(5, 2, 5000)
    bins = numeric_bins(reference)
    live = rng.normal(6, 2, 3000)
    live_counts = bins.count(live)
    points = drift.bin_points(bins, float(reference.min()), float(reference.max()))
    got = drift.wasserstein_normed(points, bins.counts, live_counts, 2.0)
    want = stats.wasserstein_distance(
        np.repeat(points, bins.counts), np.repeat(points, live_counts)
    )
    assert got == pytest.approx(want / 2.0, rel=1e-9)
    # Binned, the outer bins' mass sits at their midpoints: an over-estimate, within 25% here.
    raw = stats.wasserstein_distance(reference, live) / 2.0
    assert raw == pytest.approx(0.5, abs=0.05)
    assert raw <= got <= raw * 1.25


@pytest.mark.parametrize(
    ("bins", "size", "test"),
    [
        (NumericBins(np.array([1.0, 2.0]), np.array([1, 1, 1])), 1000, "ks"),
        (NumericBins(np.array([1.0, 2.0]), np.array([1, 1, 1])), 1001, "wasserstein"),
        (CategoricalBins(("a", "b", "c"), np.array([1, 1, 1])), 10, "chisquare"),
        (CategoricalBins(("a", "b"), np.array([1, 1])), 10, "z"),
        (CategoricalBins(("a", "b"), np.array([1, 1])), 5000, "jensenshannon"),
        (CategoricalBins(("a", "b", "c"), np.array([1, 1, 1])), 5000, "jensenshannon"),
    ],
)
def test_the_test_is_chosen_by_column_kind_and_reference_size(
    bins: Any, size: int, test: str
) -> None:
    assert drift.choose_test(bins, size) == test


def test_a_feature_threshold_overrides_the_default() -> None:
    bins = categorical_bins(["a"] * 3000 + ["b"] * 2000)
    live = np.array([2600, 2400, 0, 0])
    loose = drift.feature_drift("x", bins, live)
    strict = drift.feature_drift("x", bins, live, threshold=0.01)
    assert loose.test == "jensenshannon"
    assert not loose.drifted
    assert strict.drifted
    assert strict.threshold == 0.01


# ---- drift from the rollups ----------------------------------------------------------------


def _shifted(rng: np.random.Generator, n: int) -> dict[str, list[Any]]:
    frame = reference_frame(rng, n)
    frame["tenure"] = rng.normal(12.0, 2.0, n).tolist()  # one std up
    frame["plan"] = rng.choice(PLANS, n, p=[0.2, 0.3, 0.5]).tolist()
    frame[PREDICTION] = rng.choice([0, 1], n, p=[0.3, 0.7]).tolist()
    return frame


def _report(
    session_factory: sessionmaker[Session], frame: dict[str, list[Any]], n_reference: int
) -> dict[str, Any]:
    seeded = seeded_with_reference(session_factory, n_reference=n_reference, seed=11)
    rng = np.random.default_rng(12)
    records = records_from(frame, seeded.deployment.id, seeded.version.id, rng=rng)
    with unit_of_work(session_factory) as session:
        assert not ingest(session, records).rejected
    with session_factory() as session:
        deployment = session.get(Deployment, seeded.deployment.id)
        assert deployment is not None
        return drift.drift_report(
            session,
            deployment,
            start=_dt(T0),
            end=_dt(T0 + 3 * 3600),
        )


def _dt(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


@pytest.mark.parametrize(
    ("n_reference", "numeric_test", "categorical_test"),
    [(800, "ks", "chisquare"), (5000, "wasserstein", "jensenshannon")],
)
def test_drift_is_found_on_shifted_numeric_and_categorical_features(
    session_factory: sessionmaker[Session],
    n_reference: int,
    numeric_test: str,
    categorical_test: str,
) -> None:
    report = _report(session_factory, _shifted(np.random.default_rng(3), 2000), n_reference)
    by_name = {f["name"]: f for f in report["features"]}
    assert by_name["tenure"]["test"] == numeric_test
    assert by_name["tenure"]["drifted"]
    assert by_name["plan"]["test"] == categorical_test
    assert by_name["plan"]["drifted"]
    assert not by_name["spend"]["drifted"]
    assert not by_name["active"]["drifted"]
    assert report["prediction"]["drifted"]
    assert report["features_drifted"] == 2
    assert report["features_tested"] == 4
    assert report["dataset_drift"]  # 2 of 4 >= 0.5
    assert all(f["psi"] is not None and f["jensenshannon"] is not None for f in by_name.values())
    assert by_name["tenure"]["psi"] > 0.25


@pytest.mark.parametrize("n_reference", [800, 5000])
def test_no_drift_on_a_fresh_sample_of_the_reference_distribution(
    session_factory: sessionmaker[Session], n_reference: int
) -> None:
    report = _report(session_factory, reference_frame(np.random.default_rng(4), 2000), n_reference)
    assert [f["name"] for f in report["features"] if f["drifted"]] == []
    assert not report["prediction"]["drifted"]
    assert not report["dataset_drift"]
    assert report["features_tested"] == 4
    assert all(f["current_count"] == 2000 for f in report["features"])


def test_a_version_without_reference_data_is_refused_by_name(
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as session:
        seeded = seed_deployment(session, "no-ref")
        with pytest.raises(InvalidInput, match="model version 1 of deployment 'no-ref'"):
            drift.drift_report(session, seeded.deployment)


def test_dataset_drift_uses_the_share_of_drifted_features() -> None:
    def feature(drifted: bool) -> drift.FeatureDrift:
        return drift.FeatureDrift(
            "f", "numeric", "ks", 0.1, 0.5, None, 0.05, drifted, 0.0, 0.0, 10, 10, 0
        )

    features = [feature(True), feature(False), feature(False)]
    assert not drift.dataset_drift(features)
    assert drift.dataset_drift(features, share=1 / 3)
    assert PLAN_P  # the reference mix the fixtures draw from
