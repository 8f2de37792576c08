"""The data plane's loaders: each flavor predicts what the original model predicts, and each
refuses what it must (untrusted skops types, pickles, escaping zips and ONNX data)."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest
import skops.io

from konan.core.errors import InvalidInput
from konan.serving.flavors import load_model
from tests.serving import model_builders as mb

TREE = "sklearn.tree._tree.Tree"


def _numeric_columns(n: int = 120) -> tuple[np.ndarray, dict[str, Any]]:
    X, _ = mb.numeric_data()
    X = X[:n]
    return X, {name: X[:, i] for i, name in enumerate(mb.NUMERIC)}


# ---- sklearn via skops -----------------------------------------------------------------------


def test_skops_logistic_regression_matches_sklearn(tmp_path: Path) -> None:
    model = mb.logistic()
    loaded = load_model(mb.write_skops(model, tmp_path / "m"), "sklearn")
    X, columns = _numeric_columns()
    assert loaded.feature_names is None
    assert loaded.n_features == 4
    assert loaded.classes == [0, 1]
    assert loaded.has_proba
    np.testing.assert_array_equal(loaded.predict(columns), model.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(columns), model.predict_proba(X))


def test_skops_regression_has_no_classes_or_probabilities(tmp_path: Path) -> None:
    model = mb.regression()
    loaded = load_model(mb.write_skops(model, tmp_path / "m"), "sklearn")
    X, columns = _numeric_columns()
    assert loaded.classes is None
    assert not loaded.has_proba
    assert loaded.predict_proba(columns) is None
    np.testing.assert_array_equal(loaded.predict(columns), model.predict(X))


def test_model_fitted_on_a_numeric_frame_gets_its_column_names(tmp_path: Path) -> None:
    frame = mb.numeric_frame()
    model = mb.logistic().fit(frame, mb.numeric_data()[1])
    loaded = load_model(mb.write_skops(model, tmp_path / "m"), "sklearn")
    assert loaded.feature_names == mb.NUMERIC
    # a plain array would make sklearn warn (an error here); columns arrive in any order
    reordered = {n: frame[n].to_numpy() for n in reversed(mb.NUMERIC)}
    np.testing.assert_array_equal(loaded.predict(reordered), model.predict(frame))


def test_pipeline_with_a_string_column_gets_a_dataframe(tmp_path: Path) -> None:
    model = mb.churn_pipeline()
    frame, _ = mb.churn_frame()
    loaded = load_model(mb.write_skops(model, tmp_path / "m"), "sklearn")
    assert loaded.feature_names == mb.CHURN
    labels, proba = loaded.predict_with_proba(mb.columns_of(frame, mb.CHURN))
    np.testing.assert_array_equal(labels, model.predict(frame))
    np.testing.assert_allclose(proba, model.predict_proba(frame))


def test_missing_columns_are_named(tmp_path: Path) -> None:
    loaded = load_model(mb.write_skops(mb.churn_pipeline(), tmp_path / "m"), "sklearn")
    frame, _ = mb.churn_frame()
    with pytest.raises(InvalidInput, match="missing columns the model needs: plan"):
        loaded.predict(mb.columns_of(frame, ["tenure", "spend"]))


def test_untrusted_skops_types_are_refused_by_name(tmp_path: Path) -> None:
    path = mb.write_skops(mb.forest(), tmp_path / "forest")
    with pytest.raises(InvalidInput, match=f"not trusted: {TREE}") as caught:
        load_model(path, "sklearn")
    assert caught.value.extra == {"reason": "untrusted_types", "untrusted_types": [TREE]}


def test_skops_trusts_only_the_types_the_file_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mb.forest()
    path = mb.write_skops(model, tmp_path / "forest")
    seen: list[Any] = []
    real_load = skops.io.load

    def spy(file: Any, trusted: Any = None) -> Any:
        seen.append(trusted)
        return real_load(file, trusted=trusted)

    monkeypatch.setattr(skops.io, "load", spy)
    loaded = load_model(path, "sklearn", trusted_types=[TREE, "builtins.eval", "os.system"])
    assert seen == [[TREE]]
    assert loaded.untrusted_types == (TREE,)
    X, columns = _numeric_columns()
    np.testing.assert_array_equal(loaded.predict(columns), model.predict(X))


# ---- ONNX ------------------------------------------------------------------------------------


def test_onnx_single_input_matches_sklearn(tmp_path: Path) -> None:
    model = mb.logistic()
    loaded = load_model(mb.write_onnx(model, tmp_path / "m.onnx"), "onnx")
    X, columns = _numeric_columns()
    assert loaded.feature_names is None
    assert loaded.n_features == 4
    assert loaded.classes == [0, 1]
    labels, proba = loaded.predict_with_proba(columns)
    np.testing.assert_array_equal(labels, model.predict(X))
    assert proba is not None
    np.testing.assert_allclose(proba, model.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(loaded.predict(columns), labels)


def test_onnx_one_input_per_column_with_strings(tmp_path: Path) -> None:
    model = mb.churn_pipeline()
    frame, _ = mb.churn_frame()
    loaded = load_model(mb.write_onnx(model, tmp_path / "m.onnx"), "onnx")
    assert loaded.feature_names == mb.CHURN
    assert loaded.classes == [0, 1]
    assert loaded.has_proba
    columns = mb.columns_of(frame, mb.CHURN)
    np.testing.assert_array_equal(loaded.predict(columns), model.predict(frame))
    np.testing.assert_allclose(loaded.predict_proba(columns), model.predict_proba(frame), atol=1e-5)


def test_onnx_regression(tmp_path: Path) -> None:
    model = mb.regression()
    loaded = load_model(mb.write_onnx(model, tmp_path / "m.onnx"), "onnx")
    X, columns = _numeric_columns()
    assert loaded.classes is None
    assert not loaded.has_proba
    np.testing.assert_allclose(loaded.predict(columns), model.predict(X), rtol=1e-4, atol=1e-3)


def test_hand_built_onnx_graph(tmp_path: Path) -> None:
    loaded = load_model(mb.write_matmul_onnx(tmp_path / "m.onnx"), "onnx")
    X, columns = _numeric_columns()
    assert loaded.classes is None
    assert not loaded.has_proba
    np.testing.assert_allclose(loaded.predict(columns), (X @ mb.MATMUL_WEIGHTS)[:, 0], rtol=1e-5)


def _with_external_data(source: Path, dest: Path, location: str) -> Path:
    model = onnx.load(str(source))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    dest.write_bytes(model.SerializeToString())
    return dest


def test_onnx_external_data_inside_the_model_dir_loads(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(mb.MATMUL_WEIGHTS.tobytes())
    source = mb.write_matmul_onnx(tmp_path / "plain.onnx")
    loaded = load_model(_with_external_data(source, model_dir / "m.onnx", "weights.bin"), "onnx")
    X, columns = _numeric_columns()
    np.testing.assert_allclose(loaded.predict(columns), (X @ mb.MATMUL_WEIGHTS)[:, 0], rtol=1e-5)


@pytest.mark.parametrize("location", ["../secret", "/etc/passwd", "sub/../../secret", "..\\secret"])
def test_onnx_external_data_outside_the_model_dir_is_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret").write_bytes(b"s" * 64)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    source = mb.write_matmul_onnx(tmp_path / "plain.onnx")
    path = _with_external_data(source, model_dir / "m.onnx", location)
    with pytest.raises(InvalidInput, match="outside the model's directory"):
        load_model(path, "onnx")


def test_onnx_external_data_symlinked_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"s" * 64)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").symlink_to(tmp_path / "secret")
    source = mb.write_matmul_onnx(tmp_path / "plain.onnx")
    path = _with_external_data(source, model_dir / "m.onnx", "weights.bin")
    with pytest.raises(InvalidInput, match="outside the model's directory"):
        load_model(path, "onnx")


def test_onnx_tensor_declaring_a_huge_shape_is_refused_before_allocating(tmp_path: Path) -> None:
    model = onnx.load(str(mb.write_matmul_onnx(tmp_path / "plain.onnx")))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    del tensor.dims[:]
    tensor.dims.extend([1_000_000, 1_000_000])
    path = tmp_path / "huge.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InvalidInput, match="declares 1000000000000 elements"):
        load_model(path, "onnx")


# ---- custom Python ---------------------------------------------------------------------------


def test_custom_python_model_loads_from_its_bundle(tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    path.write_bytes(mb.custom_bundle())
    work = tmp_path / "work"
    work.mkdir()
    loaded = load_model(path, "python", workdir=work)
    frame = mb.numeric_frame()
    columns = mb.columns_of(frame, mb.NUMERIC)
    expected = (frame["a"] + frame["b"] > 0).astype(int).to_numpy()
    assert loaded.classes == [0, 1]
    assert loaded.has_proba
    np.testing.assert_array_equal(loaded.predict(columns), expected)
    proba = loaded.predict_proba(columns)
    assert proba is not None
    np.testing.assert_array_equal(proba.argmax(axis=1), expected)
    (extracted,) = work.iterdir()
    assert extracted.stat().st_mode & 0o777 == 0o700
    del loaded, proba
    gc.collect()
    assert list(work.iterdir()) == []


def test_two_bundles_with_the_same_module_names_coexist(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.write_bytes(mb.custom_bundle())
    second.write_bytes(mb.custom_bundle(**{"params.json": json.dumps({"cut": 100.0})}))
    a, b = load_model(first, "python"), load_model(second, "python")
    columns = mb.columns_of(mb.numeric_frame(), mb.NUMERIC)
    assert a.predict(columns).sum() > 0
    assert b.predict(columns).sum() == 0


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ({"../escaped.txt": "x"}, "outside the archive"),
        ({"/tmp/konan-abs.txt": "x"}, "absolute path"),
        ({"inner.zip": "x"}, "nested archives"),
    ],
)
def test_unsafe_bundles_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: dict[str, str], reason: str
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    path = tmp_path / "bundle"
    manifest = json.dumps({"entrypoint": "model:M"})
    path.write_bytes(mb.zip_bytes({"konan-model.json": manifest, "model.py": "", **entries}))
    with pytest.raises(InvalidInput, match=reason):
        load_model(path, "python")
    assert list(temp.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "tmp"]
    assert not Path("/tmp/konan-abs.txt").exists()


def test_bundle_without_the_declared_class(tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    manifest = json.dumps({"entrypoint": "model:Missing"})
    path.write_bytes(mb.zip_bytes({"konan-model.json": manifest, "model.py": "X = 1\n"}))
    with pytest.raises(InvalidInput, match="has no class 'Missing'"):
        load_model(path, "python", workdir=tmp_path)


# ---- pickle / joblib -------------------------------------------------------------------------


def test_pickle_is_refused_unless_trusted_and_never_opened(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(mb.marker_pickle(marker))
    with pytest.raises(InvalidInput, match=r"would import: posix\.system") as caught:
        load_model(path, "pickle")
    assert caught.value.extra["reason"] == "pickle_refused"
    assert not marker.exists()


def test_trusted_joblib_matches_sklearn(tmp_path: Path) -> None:
    model = mb.churn_pipeline()
    frame, _ = mb.churn_frame()
    path = tmp_path / "m.joblib"
    joblib.dump(model, path, compress=3)
    with pytest.raises(InvalidInput, match="joblib files run code"):
        load_model(path, "joblib")
    loaded = load_model(path, "joblib", allow_pickle=True)
    np.testing.assert_array_equal(
        loaded.predict(mb.columns_of(frame, mb.CHURN)), model.predict(frame)
    )
    assert os.path.exists(path)
