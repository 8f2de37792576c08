"""ONNX models on onnxruntime's CPU provider.

Before a session is built, the model is parsed (protobuf only, external data not loaded) and
every tensor is checked: declared sizes must stay under a limit (a tiny file can declare a
huge tensor), and external data must live in files inside the model's own directory.

Inputs: one input -> the columns stacked into a [N, n] tensor (float32 unless the model says
otherwise); one [N, 1] input per column -> each column under its own name (strings as object
arrays), the layout skl2onnx produces for DataFrame pipelines. Outputs: skl2onnx's "label" and
"probabilities" (zipmap off) or a ZipMap sequence; otherwise the first output is the
prediction and a second 2-D float output the probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

import numpy as np

from konan.core.errors import InvalidInput
from konan.serving.flavors.base import Columns, Flavor
from konan.serving.flavors.columns import matrix, pick, scalar, stacked

if TYPE_CHECKING:
    import onnx

MAX_TENSOR_ELEMENTS = 1 << 28  # 1 GiB of float32

_ELEMENT_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}
_CLASS_ATTRIBUTES = ("classlabels_ints", "classlabels_int64s", "classlabels_strings")


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield attribute.sparse_tensor.values
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)


def _model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def check_tensors(model: onnx.ModelProto, model_dir: Path, max_elements: int) -> None:
    import onnx

    root = model_dir.resolve()
    for tensor in _model_tensors(model):
        name = tensor.name or "(unnamed)"
        if any(d < 0 for d in tensor.dims):
            raise InvalidInput(f"ONNX tensor {name!r} has a negative dimension")
        elements = math.prod(tensor.dims)
        if elements > max_elements:
            raise InvalidInput(
                f"ONNX tensor {name!r} declares {elements} elements "
                f"(shape {list(tensor.dims)}); the limit is {max_elements}"
            )
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(tensor, name, root)


def _check_external(tensor: onnx.TensorProto, name: str, root: Path) -> None:
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    if (
        not location
        or "\x00" in location
        or PurePosixPath(location).is_absolute()
        or PureWindowsPath(location).is_absolute()
        or location.startswith(("/", "\\"))
        or ".." in PurePosixPath(location.replace("\\", "/")).parts
    ):
        raise InvalidInput(
            f"ONNX tensor {name!r} keeps its data at {location[:200]!r}, outside the model's "
            "directory; external data must be a relative path inside it"
        )
    target = (root / location).resolve()
    if not target.is_relative_to(root):
        raise InvalidInput(f"ONNX tensor {name!r} keeps its data outside the model's directory")
    if not target.is_file():
        raise InvalidInput(f"ONNX tensor {name!r} keeps its data in {location!r}, which is missing")
    try:
        end = int(entries.get("offset", 0)) + int(entries.get("length", 0))
    except ValueError:
        raise InvalidInput(f"ONNX tensor {name!r} has a malformed external data offset") from None
    if end > target.stat().st_size:
        raise InvalidInput(f"ONNX tensor {name!r} reads past the end of {location!r}")


def _classes(graph: onnx.GraphProto) -> list[Any] | None:
    import onnx

    found: list[Any] | None = None
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name in _CLASS_ATTRIBUTES:
                values = onnx.helper.get_attribute_value(attribute)
                found = [v.decode() if isinstance(v, bytes) else scalar(v) for v in values]
    return found


class OnnxModel:
    flavor: Flavor = "onnx"
    untrusted_types: tuple[str, ...] = ()

    def __init__(
        self, session: Any, classes: list[Any] | None, column_names: list[str] | None = None
    ) -> None:
        self._session = session
        inputs = session.get_inputs()
        self._inputs: list[tuple[str, Any]] = []
        for item in inputs:
            if item.type not in _ELEMENT_TYPES:
                raise InvalidInput(f"ONNX input {item.name!r} has an unsupported type {item.type}")
            self._inputs.append((item.name, _ELEMENT_TYPES[item.type]))
        self._per_column = len(inputs) > 1
        if self._per_column and any(
            len(i.shape) != 2 or i.shape[1] not in (1, None) for i in inputs
        ):
            raise InvalidInput(
                "ONNX models with several inputs must take one [N, 1] column per input"
            )
        self.feature_names: list[str] | None = None
        self.n_features: int | None = None
        if self._per_column:
            self.feature_names = [i.name for i in inputs]
            self.n_features = len(inputs)
        elif inputs and len(inputs[0].shape) == 2 and isinstance(inputs[0].shape[1], int):
            self.n_features = inputs[0].shape[1]
            if column_names is not None and len(column_names) == self.n_features:
                self.feature_names = column_names
        outputs = {o.name: o for o in session.get_outputs()}
        names = list(outputs)
        self._label = "label" if "label" in outputs else names[0]
        proba = next((n for n in ("probabilities", "output_probability") if n in outputs), None)
        if proba is None and len(names) > 1:
            proba = names[1]
        if proba is not None and not outputs[proba].type.startswith(
            ("tensor(float", "tensor(double", "seq(map")
        ):
            proba = None
        self._proba = proba
        self._zipmap = proba is not None and outputs[proba].type.startswith("seq(map")
        self.has_proba = proba is not None
        self.classes = classes

    def _feeds(self, columns: Columns) -> dict[str, np.ndarray]:
        if self._per_column:
            _, arrays = pick(columns, self.feature_names)
            return {
                name: _typed(array, dtype).reshape(-1, 1)
                for (name, dtype), array in zip(self._inputs, arrays, strict=True)
            }
        name, dtype = self._inputs[0]
        if dtype is not object:
            return {name: stacked(columns, self.feature_names, dtype)}
        _, arrays = pick(columns, self.feature_names)
        return {name: matrix([_typed(a, object) for a in arrays], object)}

    def _run(self, columns: Columns, names: list[str]) -> list[Any]:
        return list(self._session.run(names, self._feeds(columns)))

    def predict(self, columns: Columns) -> np.ndarray:
        return _labels(self._run(columns, [self._label])[0])

    def predict_proba(self, columns: Columns) -> np.ndarray | None:
        if self._proba is None:
            return None
        return self._probabilities(self._run(columns, [self._proba])[0])

    def predict_with_proba(self, columns: Columns) -> tuple[np.ndarray, np.ndarray | None]:
        if self._proba is None:
            return self.predict(columns), None
        labels, proba = self._run(columns, [self._label, self._proba])
        return _labels(labels), self._probabilities(proba)

    def _probabilities(self, value: Any) -> np.ndarray:
        if not self._zipmap:
            return np.asarray(value)
        keys = self.classes if self.classes is not None else list(value[0]) if value else []
        return np.asarray([[row[k] for k in keys] for row in value], dtype=np.float64)


def _typed(array: np.ndarray, dtype: Any) -> np.ndarray:
    if dtype is not object:
        return array.astype(dtype, copy=False)
    if array.dtype.kind == "O" and all(isinstance(v, str) for v in array):
        return array
    return array.astype(str).astype(object)  # onnxruntime takes str objects, nothing else


def _labels(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    return array


def load_onnx(
    path: Path, *, threads: int = 1, max_tensor_elements: int = MAX_TENSOR_ELEMENTS
) -> OnnxModel:
    import onnx
    import onnxruntime as ort

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends share no useful base
        raise InvalidInput(f"not a readable ONNX model: {type(exc).__name__}: {exc}") from None
    check_tensors(model, path.parent, max_tensor_elements)
    try:
        onnx.checker.check_model(str(path))  # by path: external data resolves beside it
    except onnx.checker.ValidationError as exc:
        raise InvalidInput(f"invalid ONNX model: {str(exc)[:500]}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return OnnxModel(session, _classes(model.graph), _column_names(model))


def _column_names(model: onnx.ModelProto) -> list[str] | None:
    import json

    for entry in model.metadata_props:
        if entry.key == "konan.feature_names":
            try:
                names = json.loads(entry.value)
            except ValueError:
                return None
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return names
    return None
