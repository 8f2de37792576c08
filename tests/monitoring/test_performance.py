"""Performance figures equal sklearn.metrics on the same labels; significance tests equal scipy."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from konan.core.errors import InvalidInput
from konan.monitoring.performance import (
    classification_metrics,
    parse_window,
    regression_metrics,
    two_proportion_z,
    welch_t,
)


def _binary_sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    score = rng.uniform(0, 1, n)
    truth = (rng.uniform(0, 1, n) < score).astype(int)
    proba = np.column_stack([1 - score, score])
    pred = (score > 0.5).astype(int)
    return truth, pred, proba


def test_binary_classification_figures_equal_sklearn() -> None:
    rng = np.random.default_rng(1)
    truth, pred, proba = _binary_sample(rng, 2000)
    got = classification_metrics(truth.tolist(), pred.tolist(), [0, 1], proba)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, pred), abs=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(truth, pred), abs=1e-12)
    assert got["recall"] == pytest.approx(skm.recall_score(truth, pred), abs=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(truth, pred), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, proba[:, 1]), abs=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(truth, proba, labels=[0, 1]), abs=1e-12)
    assert got["confusion_matrix"] == {
        "labels": [0, 1],
        "matrix": skm.confusion_matrix(truth, pred, labels=[0, 1]).tolist(),
    }


def test_binary_positive_class_is_the_second_signature_class() -> None:
    truth = ["stay", "churn", "churn", "stay", "churn"]
    pred = ["stay", "churn", "stay", "churn", "churn"]
    got = classification_metrics(truth, pred, ["stay", "churn"])
    assert got["positive_class"] == "churn"
    assert got["precision"] == pytest.approx(skm.precision_score(truth, pred, pos_label="churn"))
    assert got["recall"] == pytest.approx(skm.recall_score(truth, pred, pos_label="churn"))
    assert got["f1"] == pytest.approx(skm.f1_score(truth, pred, pos_label="churn"))


def test_multiclass_figures_equal_sklearn_macro() -> None:
    rng = np.random.default_rng(2)
    n, classes = 3000, ["a", "b", "c"]
    logits = rng.normal(size=(n, 3))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth_idx = np.array([rng.choice(3, p=row) for row in proba])
    pred_idx = proba.argmax(axis=1)
    truth = [classes[i] for i in truth_idx]
    pred = [classes[i] for i in pred_idx]
    got = classification_metrics(truth, pred, classes, proba)
    assert got["average"] == "macro"
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, pred), abs=1e-12)
    for name, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        assert got[name] == pytest.approx(fn(truth, pred, average="macro"), abs=1e-12)
    expected_auc = skm.roc_auc_score(truth, proba, multi_class="ovr", labels=classes)
    assert got["roc_auc"] == pytest.approx(expected_auc, abs=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(truth, proba, labels=classes), abs=1e-12)
    assert got["confusion_matrix"]["matrix"] == skm.confusion_matrix(truth, pred).tolist()


def test_undefined_figures_are_null_and_zero_division_is_zero() -> None:
    got = classification_metrics([1, 1, 1], [0, 0, 0], [0, 1], np.array([[0.6, 0.4]] * 3))
    assert got["roc_auc"] is None  # one class in the truth
    assert got["precision"] == skm.precision_score([1, 1, 1], [0, 0, 0], zero_division=0)
    assert classification_metrics([], [], [0, 1]) == {"rows": 0}


def test_regression_figures_equal_sklearn() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(50, 10, 1500)
    pred = truth + rng.normal(0, 3, 1500)
    got = regression_metrics(truth, pred)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(truth, pred), abs=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(truth, pred)), abs=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(truth, pred), abs=1e-12)
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(truth, pred), abs=1e-12)
    with_zero = np.array([0.0, 2.0, 4.0])
    assert regression_metrics(with_zero, with_zero + 1)["mape"] == pytest.approx(
        skm.mean_absolute_percentage_error(with_zero, with_zero + 1)
    )


def test_two_proportion_z_matches_the_normal_distribution() -> None:
    k1, n1, k2, n2 = 830, 1000, 860, 1000
    z, p = two_proportion_z(k1, n1, k2, n2)
    pooled = (k1 + k2) / (n1 + n2)
    expected_z = (k2 / n2 - k1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert z == pytest.approx(expected_z, abs=1e-12)
    assert p == pytest.approx(2 * stats.norm.sf(abs(expected_z)), abs=1e-12)
    # Same answer as a chi-square test of the 2x2 table without continuity correction.
    table = np.array([[k1, n1 - k1], [k2, n2 - k2]])
    chi2 = stats.chi2_contingency(table, correction=False)
    assert p == pytest.approx(chi2.pvalue, abs=1e-12)


def test_welch_t_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    a = np.abs(rng.normal(0, 1, 400))
    b = np.abs(rng.normal(0, 1.3, 250))
    t, p = welch_t(a, b)
    expected = stats.ttest_ind(b, a, equal_var=False)
    assert t == pytest.approx(expected.statistic, abs=1e-10)
    assert p == pytest.approx(expected.pvalue, abs=1e-10)


@pytest.mark.parametrize(
    ("start", "end", "bucket"),
    [
        (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), "1d"),
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), "fortnight"),
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), "10s"),
        (datetime(2020, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), "1m"),
    ],
)
def test_bad_windows_are_refused(start: datetime, end: datetime, bucket: str) -> None:
    with pytest.raises(InvalidInput):
        parse_window(start, end, bucket)
