"""Estimated performance before labels arrive: confidence-based performance estimation (CBPE).

As NannyML's CBPE: if the model's predicted probabilities are calibrated, the probability the
model gives to a class *is* the chance that class is the truth, so a window's confusion matrix
can be estimated without labels:

    E[CM[actual=i, predicted=j]] = sum over rows predicted j of calibrated P(class i | x)

and every metric derived from it follows. Expected accuracy is the mean calibrated
probability of the predicted class (= the mean max calibrated probability when the
prediction is the argmax). Precision, recall and F1 come from the expected confusion matrix:
binary for the positive class, macro over the classes otherwise.

Calibration: one-vs-rest isotonic regression per class (pool-adjacent-violators, numpy),
fitted on a labelled reference sample of the same model version; multiclass rows are
renormalised to sum to one. The control plane never runs a user's model, so it cannot score
the version's registered reference dataset itself; the reference sample is therefore the
version's *labelled logged predictions* from a reference window (by default every labelled
request before the analysed window). With fewer than `MIN_REFERENCE_ROWS` labelled rows the
model's own probabilities are used uncalibrated, and the response says so.

Assumptions (returned with every estimate): no concept drift (P(y|x) unchanged), calibration
on the reference holds in the analysed window, and the probabilities logged are the ones the
predictions were made from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

MIN_REFERENCE_ROWS = 100

ASSUMPTIONS = [
    "no concept drift: P(y|x) unchanged between the reference and the analysed window",
    "calibration on the reference data holds in the analysed window",
    "the logged probabilities are the ones the logged predictions came from",
]
UNCALIBRATED = (
    "too few labelled reference rows to calibrate: the model's own probabilities are used "
    "uncalibrated, so the estimate is only as good as the model's calibration"
)

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class Isotonic:
    """A fitted non-decreasing step function (PAV), evaluated by linear interpolation."""

    x: Floats
    y: Floats

    def __call__(self, values: Floats) -> Floats:
        return np.interp(values, self.x, self.y)


def fit_isotonic(scores: Floats, targets: Floats) -> Isotonic:
    order = np.argsort(scores, kind="mergesort")
    xs = scores[order]
    ys = targets[order].astype(np.float64)
    # Blocks of (sum, weight); merge while a block's mean is below its predecessor's.
    sums: list[float] = []
    weights: list[float] = []
    lefts: list[float] = []
    rights: list[float] = []
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        sums.append(y)
        weights.append(1.0)
        lefts.append(x)
        rights.append(x)
        while len(sums) > 1 and sums[-2] / weights[-2] >= sums[-1] / weights[-1]:
            s, w, r = sums.pop(), weights.pop(), rights.pop()
            lefts.pop()
            sums[-1] += s
            weights[-1] += w
            rights[-1] = r
    means = [s / w for s, w in zip(sums, weights, strict=True)]
    knots_x: list[float] = []
    knots_y: list[float] = []
    for left, right, mean in zip(lefts, rights, means, strict=True):
        knots_x.extend([left, right] if right > left else [left])
        knots_y.extend([mean, mean] if right > left else [mean])
    return Isotonic(np.asarray(knots_x), np.asarray(knots_y))


@dataclass(frozen=True)
class Calibrator:
    """Per-class isotonic maps; `None` means the probabilities pass through uncalibrated."""

    maps: list[Isotonic] | None
    reference_rows: int

    @property
    def method(self) -> str:
        return "isotonic" if self.maps is not None else "none"

    def apply(self, proba: Floats) -> Floats:
        if self.maps is None:
            return proba
        out = np.column_stack([m(proba[:, i]) for i, m in enumerate(self.maps)])
        if out.shape[1] == 2:
            # Binary: calibrate the positive class only, so the pair sums to one exactly.
            pos = out[:, 1]
            return np.column_stack([1.0 - pos, pos])
        total = out.sum(axis=1, keepdims=True)
        safe = np.where(total > 0, total, 1.0)
        return np.where(total > 0, out / safe, 1.0 / out.shape[1])


def fit_calibrator(proba: Floats, y_idx: Ints, min_rows: int = MIN_REFERENCE_ROWS) -> Calibrator:
    """Fit on reference probabilities (n x classes) and true class indices."""
    n, k = proba.shape if proba.ndim == 2 else (0, 0)
    if n < min_rows or k < 2:
        return Calibrator(None, n)
    maps = [fit_isotonic(proba[:, i], (y_idx == i).astype(np.float64)) for i in range(k)]
    return Calibrator(maps, n)


def estimate(proba: Floats, pred_idx: Ints, calibrator: Calibrator) -> dict[str, Any]:
    """Expected accuracy, precision, recall, F1 and confusion matrix of one window."""
    n, k = proba.shape
    if n == 0:
        return {"rows": 0}
    cal = calibrator.apply(proba)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), pred_idx] = 1.0
    # expected[i, j]: expected count of rows whose truth is i and prediction is j
    expected = cal.T @ onehot
    accuracy = float(cal[np.arange(n), pred_idx].mean())
    tp = np.diag(expected)
    predicted = expected.sum(axis=0)
    actual = expected.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denom = predicted + actual
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    if k == 2:
        p, r, f = float(precision[1]), float(recall[1]), float(f1[1])
    else:
        p, r, f = float(precision.mean()), float(recall.mean()), float(f1.mean())
    return {
        "rows": int(n),
        "accuracy": accuracy,
        "precision": p,
        "recall": r,
        "f1": f,
        "confusion_matrix": expected.round(3).tolist(),
    }
