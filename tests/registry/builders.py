"""Real models and data for registry tests, built in the test run (nothing binary committed)."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

FEATURES = ["tenure", "spend", "visits", "plan"]


def reference_frame(n: int = 400, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.normal(24, 8, n).round(2),
            "spend": rng.gamma(2.0, 30.0, n).round(2),
            "visits": rng.integers(0, 40, n),
            "plan": rng.choice(["basic", "pro", "team"], n),
        }
    )
    score = 0.08 * frame["tenure"] - 0.01 * frame["spend"] + (frame["plan"] == "pro") * 1.0
    frame["churned"] = (score + rng.normal(0, 0.5, n) > 1.2).astype(int)
    return frame


def pipeline_classifier(frame: pd.DataFrame) -> Pipeline:
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])],
                    remainder="passthrough",
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )
    return model.fit(frame[FEATURES], frame["churned"])


def numeric_frame(n: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    frame["y"] = (frame["a"] + frame["b"] > 0).astype(int)
    return frame


def numeric_classifier(frame: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression().fit(frame[["a", "b", "c", "d"]], frame["y"])


def regressor(frame: pd.DataFrame) -> LinearRegression:
    return LinearRegression().fit(frame[["a", "b", "c", "d"]], frame["a"] * 2 + frame["b"])


def skops_bytes(model: object) -> bytes:
    data: bytes = skops.io.dumps(model)
    return data


def onnx_bytes(model: LogisticRegression, n_features: int = 4) -> bytes:
    from skl2onnx import to_onnx

    sample = np.zeros((1, n_features), dtype=np.float32)
    onx = to_onnx(model, sample, options={"zipmap": False}, target_opset=18)
    return bytes(onx.SerializeToString())


CUSTOM_SOURCE = '''
import numpy as np


class Threshold:
    """Predicts 1 when a + b > 0."""

    classes_ = [0, 1]

    def predict(self, X):
        a = np.asarray(X["a"], dtype=float)
        b = np.asarray(X["b"], dtype=float)
        return (a + b > 0).astype(int)
'''


def custom_zip(extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(
            "konan-model.json",
            json.dumps({"entrypoint": "threshold:Threshold", "files": ["threshold.py"]}),
        )
        zf.writestr("threshold.py", CUSTOM_SOURCE)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


@dataclass
class MarkerPickle:
    data: bytes
    marker: Path


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def malicious_pickle(marker: Path) -> MarkerPickle:
    return MarkerPickle(pickle.dumps(_Payload(marker), protocol=4), marker)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


class MarginClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A hand-written scikit-learn-style estimator skl2onnx has no converter for (what a
    trusted pickle often wraps)."""

    def fit(self, X: Any, y: Any) -> MarginClassifier:
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: Any) -> Any:
        return self.classes_[(np.asarray(X, dtype=float)[:, :2].sum(axis=1) > 0).astype(int)]

    def predict_proba(self, X: Any) -> Any:
        p = 1 / (1 + np.exp(-np.asarray(X, dtype=float)[:, :2].sum(axis=1)))
        return np.column_stack([1 - p, p])


def pickle_bytes(model: object) -> bytes:
    return pickle.dumps(model, protocol=4)


def float32_flipping_frame() -> pd.DataFrame:
    """Half the rows sit 1e-9 above the decision boundary of `float32_flipping_classifier`:
    in float64 they are class 1, rounded to float32 they land on it (class 0)."""
    x = np.where(np.arange(200) % 2 == 0, 1.000000001, 0.0)
    return pd.DataFrame({"x": x, "noise": np.zeros(200), "y": (x > 0.5).astype(int)})


def float32_flipping_classifier() -> LogisticRegression:
    frame = float32_flipping_frame()
    model = LogisticRegression().fit(frame[["x", "noise"]], frame["y"])
    model.coef_ = np.array([[1.0, 0.0]])
    model.intercept_ = np.array([-1.0000000005])
    return model


class SlowToCompile(MarginClassifier):
    """Validates at once; hangs when skl2onnx looks it up (it reads ``onnx_parser`` first)."""

    @property
    def onnx_parser(self) -> Any:
        import time

        time.sleep(3600)


class BurnsCpuWhenCompiled(MarginClassifier):
    """Validates at once; spins on the CPU when skl2onnx looks it up."""

    @property
    def onnx_parser(self) -> Any:
        while True:
            pass
