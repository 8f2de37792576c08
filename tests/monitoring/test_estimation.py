"""CBPE: the estimated accuracy tracks the realised one under covariate shift.

Tolerance stated here and in the report: |estimated - realised| < 0.05 on 5,000 rows (measured
about 0.01 with these seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from konan.monitoring.estimation import estimate, fit_calibrator, fit_isotonic

TOLERANCE = 0.05
N = 5000


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-x)))


def _binary(rng: np.random.Generator, mean: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True P(y=1|x) = sigmoid(2x) everywhere (no concept drift); the model's own probability
    is miscalibrated (sigmoid(3x + 0.5))."""
    x = rng.normal(mean, 1.0, N)
    y = (rng.uniform(size=N) < _sigmoid(2 * x)).astype(np.int64)
    score = _sigmoid(3 * x + 0.5)
    return np.column_stack([1 - score, score]), y, (score > 0.5).astype(np.int64)


@pytest.mark.parametrize("shift", [0.0, 0.8, 1.5, -1.0])
def test_estimated_binary_accuracy_tracks_realised_under_covariate_shift(shift: float) -> None:
    rng = np.random.default_rng(7)
    ref_proba, ref_y, _ = _binary(rng, 0.0)
    calibrator = fit_calibrator(ref_proba, ref_y)
    assert calibrator.method == "isotonic"
    proba, y, pred = _binary(rng, shift)
    got = estimate(proba, pred, calibrator)
    realised = skm.accuracy_score(y, pred)
    assert abs(got["accuracy"] - realised) < TOLERANCE, (got["accuracy"], realised)
    assert abs(got["f1"] - skm.f1_score(y, pred)) < TOLERANCE
    assert abs(got["precision"] - skm.precision_score(y, pred, zero_division=0)) < TOLERANCE
    assert abs(got["recall"] - skm.recall_score(y, pred)) < TOLERANCE


def test_the_shift_moves_realised_accuracy_and_the_estimate_follows() -> None:
    rng = np.random.default_rng(8)
    ref_proba, ref_y, _ = _binary(rng, 0.0)
    calibrator = fit_calibrator(ref_proba, ref_y)
    near_proba, near_y, near_pred = _binary(rng, 0.0)
    far_proba, far_y, far_pred = _binary(rng, 2.0)
    realised_drop = skm.accuracy_score(far_y, far_pred) - skm.accuracy_score(near_y, near_pred)
    estimated_drop = (
        estimate(far_proba, far_pred, calibrator)["accuracy"]
        - estimate(near_proba, near_pred, calibrator)["accuracy"]
    )
    assert abs(realised_drop) > 0.05  # the shift really changes performance
    assert abs(estimated_drop - realised_drop) < TOLERANCE


def test_estimated_multiclass_accuracy_tracks_realised() -> None:
    rng = np.random.default_rng(9)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])

    def sample(shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.normal(size=(N, 2)) + shift
        logits = -((x[:, None, :] - centres[None]) ** 2).sum(axis=2) / 2
        true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        y = np.array([rng.choice(3, p=row) for row in true_p])
        sharp = np.exp(1.8 * logits) / np.exp(1.8 * logits).sum(axis=1, keepdims=True)
        return sharp, y, sharp.argmax(axis=1)

    ref_proba, ref_y, _ = sample(np.zeros(2))
    calibrator = fit_calibrator(ref_proba, ref_y)
    proba, y, pred = sample(np.array([1.0, 0.5]))
    got = estimate(proba, pred, calibrator)
    assert abs(got["accuracy"] - skm.accuracy_score(y, pred)) < TOLERANCE
    assert abs(got["f1"] - skm.f1_score(y, pred, average="macro")) < TOLERANCE


def test_too_little_reference_leaves_probabilities_uncalibrated() -> None:
    proba = np.array([[0.2, 0.8], [0.9, 0.1]])
    calibrator = fit_calibrator(proba, np.array([1, 0]))
    assert calibrator.method == "none"
    got = estimate(proba, np.array([1, 0]), calibrator)
    assert got["accuracy"] == pytest.approx(0.85)


def test_isotonic_fit_is_monotone_and_matches_sklearn() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(10)
    x = rng.uniform(size=500)
    y = (rng.uniform(size=500) < x**2).astype(float)
    ours = fit_isotonic(x, y)(np.sort(x))
    assert np.all(np.diff(ours) >= -1e-12)
    theirs = IsotonicRegression(out_of_bounds="clip").fit(x, y).predict(np.sort(x))
    assert np.allclose(ours, theirs, atol=1e-9)
