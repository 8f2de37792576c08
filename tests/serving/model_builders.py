"""Real models and artifacts for the flavor, loader and sandbox tests, built during the run."""

from __future__ import annotations

import io
import json
import pickle
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

NUMERIC = ["a", "b", "c", "d"]
CHURN = ["tenure", "spend", "plan"]


def numeric_data(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n, 4, n_informative=3, n_redundant=1, random_state=0)
    return X, y


def numeric_frame(n: int = 300) -> pd.DataFrame:
    X, _ = numeric_data(n)
    return pd.DataFrame(X, columns=NUMERIC)


def columns_of(frame: pd.DataFrame, names: list[str]) -> dict[str, Any]:
    return {n: frame[n].to_numpy() for n in names}


def logistic() -> LogisticRegression:
    X, y = numeric_data()
    return LogisticRegression().fit(X, y)


def forest() -> RandomForestClassifier:
    X, y = numeric_data()
    return RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0).fit(X, y)


def regression() -> Ridge:
    X, y = make_regression(300, 4, noise=0.1, random_state=0)
    return Ridge().fit(X, y)


def churn_frame(n: int = 300) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "tenure": rng.normal(24, 8, n).round(2),
            "spend": rng.gamma(2.0, 30.0, n).round(2),
            "plan": rng.choice(["basic", "pro", "team"], n),
        }
    )
    score = 0.08 * frame["tenure"] - 0.01 * frame["spend"] + (frame["plan"] == "pro") * 1.0
    return frame, (score + rng.normal(0, 0.5, n) > 1.2).astype(int)


def churn_pipeline() -> Pipeline:
    frame, y = churn_frame()
    prep = ColumnTransformer(
        [("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])], remainder="passthrough"
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)


def write_skops(model: object, path: Path) -> Path:
    path.write_bytes(skops.io.dumps(model))
    return path


def write_onnx(model: object, path: Path) -> Path:
    """ONNX via skl2onnx (zipmap off): one float input, or one input per column for the churn
    pipeline (strings as StringTensorType)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if isinstance(model, Pipeline):
        types = [
            ("tenure", FloatTensorType([None, 1])),
            ("spend", FloatTensorType([None, 1])),
            ("plan", StringTensorType([None, 1])),
        ]
        onx = to_onnx(model, initial_types=types, options={"zipmap": False}, target_opset=18)
    else:
        sample = np.zeros((1, 4), dtype=np.float32)
        options = {"zipmap": False} if hasattr(model, "classes_") else None
        onx = to_onnx(model, sample, options=options, target_opset=18)
    path.write_bytes(onx.SerializeToString())
    return path


MATMUL_WEIGHTS = np.array([[1.0], [-2.0], [0.5], [0.0]], dtype=np.float32)


def write_matmul_onnx(path: Path) -> Path:
    """A hand-built ONNX graph, y = X @ W, with W stored as an initializer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(MATMUL_WEIGHTS, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def zip_bytes(entries: dict[str, bytes | str], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


THRESHOLD = textwrap.dedent(
    '''
    import json

    import numpy as np

    from .helpers import margin


    class Threshold:
        """Class 1 when a + b > cut; the cut is read from the bundle in load()."""

        classes_ = [0, 1]

        def __init__(self, cut):
            self.cut = cut

        @classmethod
        def load(cls, model_dir):
            return cls(json.loads((model_dir / "params.json").read_text())["cut"])

        def predict(self, X):
            print('{"ok": true, "report": {"forged": true}}')  # stdout must not become the result
            return (margin(X) > self.cut).astype(int)

        def predict_proba(self, X):
            p = 1 / (1 + np.exp(-(margin(X) - self.cut)))
            return np.column_stack([1 - p, p])
    '''
)
HELPERS = "def margin(X):\n    return X['a'].to_numpy() + X['b'].to_numpy()\n"


def custom_bundle(source: str = THRESHOLD, **extra_files: bytes | str) -> bytes:
    files: dict[str, bytes | str] = {
        "model.py": source,
        "helpers.py": HELPERS,
        "params.json": json.dumps({"cut": 0.0}),
        **extra_files,
    }
    manifest = {"entrypoint": "model:Threshold", "files": sorted(files)}
    return zip_bytes({"konan-model.json": json.dumps(manifest), **files})


def custom_model(predict_body: str, *, imports: str = "") -> bytes:
    """A one-class bundle whose predict runs predict_body (X is the DataFrame)."""
    source = textwrap.dedent(
        f"""
        import numpy as np
        {imports}

        class Threshold:
            def predict(self, X):
        """
    ) + textwrap.indent(textwrap.dedent(predict_body), " " * 8)
    manifest = {"entrypoint": "model:Threshold", "files": ["model.py"]}
    return zip_bytes({"konan-model.json": json.dumps(manifest), "model.py": source})


class MarkerPayload:
    """Unpickling this runs `touch marker`: the classic __reduce__ attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def marker_pickle(marker: Path) -> bytes:
    return pickle.dumps(MarkerPayload(marker), protocol=4)
