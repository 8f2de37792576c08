"""Validation in the sandbox process: real models of every flavor, and the ways a model can be
hostile or broken (code on load, untrusted types, hangs, memory, secrets, network)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from konan.core.errors import InvalidInput
from konan.registry.sandbox import SandboxLimits, ValidationReport, validate_model
from konan.registry.signature import OutputSpec
from tests.serving import model_builders as mb

TREE = "sklearn.tree._tree.Tree"


@pytest.fixture
def boxes(tmp_path: Path) -> Iterator[Path]:
    """Where sandbox directories are made; every test checks it is empty afterwards."""
    path = tmp_path / "boxes"
    path.mkdir()
    yield path
    assert list(path.iterdir()) == []


@pytest.fixture
def numeric_sample(tmp_path: Path) -> Path:
    return mb.write_parquet(mb.numeric_frame(), tmp_path / "sample.parquet")


@pytest.fixture
def churn_sample(tmp_path: Path) -> Path:
    frame, _ = mb.churn_frame()
    return mb.write_parquet(frame, tmp_path / "churn.parquet")


def _validate(
    artifact: Path,
    flavor: str,
    boxes: Path,
    *,
    sample: Path | None = None,
    features: list[str] | None = None,
    trusted: list[str] | None = None,
    allow_pickle: bool = False,
    **limits: Any,
) -> ValidationReport:
    return validate_model(
        artifact,
        flavor=flavor,
        sample=sample,
        feature_names=features,
        trusted_types=trusted or [],
        allow_pickle=allow_pickle,
        limits=SandboxLimits(tmp_dir=boxes, **limits),
    )


def _refusal(**kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        _validate(**kwargs)
    return caught.value


# ---- every flavor through the real sandbox ---------------------------------------------------


def test_sklearn_classifier(tmp_path: Path, boxes: Path, numeric_sample: Path) -> None:
    model = mb.logistic()
    artifact = mb.write_skops(model, tmp_path / "m")
    report = _validate(artifact, "sklearn", boxes, sample=numeric_sample, features=mb.NUMERIC)
    X = mb.numeric_frame().to_numpy()
    assert report.flavor == "sklearn"
    assert report.feature_names is None
    assert report.n_features == 4
    assert report.classes == (0, 1)
    assert report.has_proba
    assert report.sample_rows == 300
    assert list(report.predictions) == model.predict(X[:5]).tolist()
    assert report.probabilities is not None
    np.testing.assert_allclose(report.probabilities, model.predict_proba(X[:5]))
    assert report.to_output_spec() == OutputSpec(
        kind="label", type="integer", classes=[0, 1], probabilities=True
    )
    assert {"rlimits", "clean-env", "private-dir", "timeout"} <= set(report.isolation)


def test_sklearn_regression_is_a_value(tmp_path: Path, boxes: Path, numeric_sample: Path) -> None:
    model = mb.regression()
    artifact = mb.write_skops(model, tmp_path / "m")
    report = _validate(artifact, "sklearn", boxes, sample=numeric_sample, features=mb.NUMERIC)
    assert report.to_output_spec() == OutputSpec(kind="value", type="float")
    X = mb.numeric_frame().to_numpy()
    np.testing.assert_allclose(report.predictions, model.predict(X[:5]))


def test_sklearn_pipeline_on_a_dataframe(tmp_path: Path, boxes: Path, churn_sample: Path) -> None:
    model = mb.churn_pipeline()
    artifact = mb.write_skops(model, tmp_path / "m")
    # the reference data may hold more columns than the model uses
    report = _validate(
        artifact, "sklearn", boxes, sample=churn_sample, features=["plan", "spend", "tenure"]
    )
    frame, _ = mb.churn_frame()
    assert report.feature_names == tuple(mb.CHURN)
    assert report.classes == (0, 1)
    assert list(report.predictions) == model.predict(frame[:5]).tolist()


def test_forest_needs_its_tree_type_trusted(
    tmp_path: Path, boxes: Path, numeric_sample: Path
) -> None:
    artifact = mb.write_skops(mb.forest(), tmp_path / "forest")
    error = _refusal(artifact=artifact, flavor="sklearn", boxes=boxes, sample=numeric_sample)
    assert f"not trusted: {TREE}." in error.detail
    assert error.extra == {"reason": "untrusted_types", "untrusted_types": [TREE]}
    report = _validate(artifact, "sklearn", boxes, sample=numeric_sample, trusted=[TREE])
    assert report.untrusted_types == (TREE,)
    assert report.classes == (0, 1)


def test_onnx_pipeline_with_one_input_per_column(
    tmp_path: Path, boxes: Path, churn_sample: Path
) -> None:
    model = mb.churn_pipeline()
    artifact = mb.write_onnx(model, tmp_path / "m")
    report = _validate(artifact, "onnx", boxes, sample=churn_sample, features=mb.CHURN)
    frame, _ = mb.churn_frame()
    assert report.flavor == "onnx"
    assert report.feature_names == tuple(mb.CHURN)
    assert report.classes == (0, 1)
    assert report.has_proba
    assert list(report.predictions) == model.predict(frame[:5]).tolist()
    assert report.probabilities is not None
    np.testing.assert_allclose(report.probabilities, model.predict_proba(frame[:5]), atol=1e-5)
    assert report.to_output_spec().kind == "label"


def test_onnx_single_input(tmp_path: Path, boxes: Path, numeric_sample: Path) -> None:
    model = mb.logistic()
    artifact = mb.write_onnx(model, tmp_path / "m")
    report = _validate(artifact, "onnx", boxes, sample=numeric_sample, features=mb.NUMERIC)
    assert report.feature_names is None
    assert report.n_features == 4
    assert list(report.predictions) == model.predict(mb.numeric_frame().to_numpy()[:5]).tolist()


def test_onnx_external_data_escaping_the_model_dir(tmp_path: Path, boxes: Path) -> None:
    import onnx

    model = onnx.load(str(mb.write_matmul_onnx(tmp_path / "m.onnx")))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../secret"
    artifact = tmp_path / "external.onnx"
    artifact.write_bytes(model.SerializeToString())
    error = _refusal(artifact=artifact, flavor="onnx", boxes=boxes)
    assert "'../secret', outside the model's directory" in error.detail


def test_custom_python_model(tmp_path: Path, boxes: Path, numeric_sample: Path) -> None:
    artifact = tmp_path / "bundle"
    artifact.write_bytes(mb.custom_bundle())
    report = _validate(artifact, "python", boxes, sample=numeric_sample, features=mb.NUMERIC)
    frame = mb.numeric_frame()
    assert report.flavor == "python"
    assert report.classes == (0, 1)
    assert report.has_proba
    # the model prints a forged result on stdout; the report is still the real one
    assert list(report.predictions) == (frame["a"] + frame["b"] > 0)[:5].astype(int).tolist()


def test_trusted_joblib(tmp_path: Path, boxes: Path, numeric_sample: Path) -> None:
    model = mb.logistic()
    artifact = tmp_path / "m.joblib"
    joblib.dump(model, artifact, compress=3)
    error = _refusal(artifact=artifact, flavor="joblib", boxes=boxes, sample=numeric_sample)
    assert error.extra["reason"] == "pickle_refused"
    report = _validate(artifact, "joblib", boxes, sample=numeric_sample, allow_pickle=True)
    assert report.flavor == "joblib"
    assert list(report.predictions) == model.predict(mb.numeric_frame().to_numpy()[:5]).tolist()


def test_without_a_sample_the_report_comes_from_the_model(tmp_path: Path, boxes: Path) -> None:
    report = _validate(mb.write_skops(mb.logistic(), tmp_path / "m"), "sklearn", boxes)
    assert report.sample_rows == 0
    assert report.predictions == ()
    assert report.to_output_spec() == OutputSpec(
        kind="label", type="integer", classes=[0, 1], probabilities=True
    )


# ---- hostile and broken models ---------------------------------------------------------------


@pytest.fixture
def open_dir(tmp_path: Path) -> Path:
    """A world-writable directory: if a payload ran, whatever user it ran as could write here."""
    path = tmp_path / "open"
    path.mkdir()
    path.chmod(0o777)
    return path


def test_pickle_payload_never_runs(tmp_path: Path, boxes: Path, open_dir: Path) -> None:
    marker = open_dir / "marker"
    artifact = tmp_path / "model.pkl"
    artifact.write_bytes(mb.marker_pickle(marker))
    error = _refusal(artifact=artifact, flavor="pickle", boxes=boxes)
    assert "would import: posix.system" in error.detail
    assert error.extra == {"reason": "pickle_refused", "globals": ["posix.system"]}
    assert not marker.exists()


def test_the_marker_check_can_fail(tmp_path: Path, boxes: Path, open_dir: Path) -> None:
    """Control for the test above: once trusted, the same file does run its payload (shown
    without the read-only filesystem, which would stop the write)."""
    marker = open_dir / "marker"
    artifact = tmp_path / "model.pkl"
    artifact.write_bytes(mb.marker_pickle(marker))
    error = _refusal(
        artifact=artifact, flavor="pickle", boxes=boxes, allow_pickle=True, isolate_network=False
    )
    assert error.extra["reason"] == "load_error"
    assert "has no predict method" in error.detail
    assert marker.exists()


def test_a_model_that_hangs_times_out(tmp_path: Path, boxes: Path, numeric_sample: Path) -> None:
    artifact = tmp_path / "bundle"
    artifact.write_bytes(mb.custom_model("time.sleep(3600)", imports="import time"))
    started = time.monotonic()
    error = _refusal(
        artifact=artifact, flavor="python", boxes=boxes, sample=numeric_sample, timeout_seconds=4
    )
    assert time.monotonic() - started < 8
    assert error.extra["reason"] == "timeout"
    assert "timed out after 4 s while predicting on the reference data" in error.detail


def test_a_model_that_allocates_too_much(tmp_path: Path, boxes: Path, numeric_sample: Path) -> None:
    artifact = tmp_path / "bundle"
    artifact.write_bytes(mb.custom_model("return np.ones(3 * 1024**3 // 8) + 1"))
    error = _refusal(
        artifact=artifact, flavor="python", boxes=boxes, sample=numeric_sample, memory_mb=1024
    )
    assert error.extra["reason"] == "memory"
    assert "ran out of memory while predicting (limit 1024 MB)" in error.detail


def test_a_model_that_spins_hits_the_cpu_limit(
    tmp_path: Path, boxes: Path, numeric_sample: Path
) -> None:
    artifact = tmp_path / "bundle"
    artifact.write_bytes(mb.custom_model("while True:\n    pass"))
    error = _refusal(
        artifact=artifact,
        flavor="python",
        boxes=boxes,
        sample=numeric_sample,
        cpu_seconds=2,
        timeout_seconds=30,
    )
    assert error.extra["reason"] == "cpu_limit"


PROBE = """
import os, socket
from pathlib import Path
keys = " ".join(sorted(os.environ))
try:
    socket.create_connection(("127.0.0.1", int(X["port"].iloc[0])), timeout=2).close()
    net = "open"
except OSError:
    net = "blocked"
pids = sum(p.isdigit() for p in os.listdir("/proc"))
try:
    Path(X["outside"].iloc[0]).write_text("written by the model")
    write = "written"
except OSError as exc:
    write = type(exc).__name__
try:
    secret = Path(X["secret"].iloc[0]).read_text()
except OSError as exc:
    secret = type(exc).__name__
Path("inside.txt").write_text("the private dir stays writable")
out = [keys, net, str(pids), os.getcwd(), f"{write} {secret}"]  # the report shows 5 rows
return np.array(out + [""] * (len(X) - len(out)), dtype=object)
"""


def _probe_sample(tmp_path: Path, port: int, outside: Path, secret: Path) -> Path:
    frame = pd.DataFrame({"port": [port] * 8, "outside": str(outside), "secret": str(secret)})
    return mb.write_parquet(frame, tmp_path / "probe.parquet")


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "data-dir" / "secret_key"
    path.parent.mkdir()
    path.write_text("s3cr3t")
    return path


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def test_the_child_sees_no_secrets_no_network_no_host_processes(
    tmp_path: Path,
    boxes: Path,
    listener: int,
    open_dir: Path,
    secret_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("KONAN_AUTH__SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.setenv(name, "s3cr3t")
    outside = open_dir / "outside.txt"
    sample = _probe_sample(tmp_path, listener, outside, secret_file)
    artifact = tmp_path / "bundle"
    artifact.write_bytes(mb.custom_model(PROBE))
    report = _validate(artifact, "python", boxes, sample=sample, hide_paths=(secret_file.parent,))
    keys, net, pids, cwd, files = report.predictions[:5]
    write, secret = files.split()
    assert not [k for k in keys.split() if k.startswith(("KONAN_", "AWS_", "DATABASE", "REDIS"))]
    assert set(keys.split()) <= {
        "PATH", "LANG", "LC_CTYPE", "HOME", "TMPDIR", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE",
        "PYTHONNOUSERSITE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    }  # fmt: skip
    assert Path(cwd).parent == boxes
    assert report.output_kind == "label"
    assert report.output_type == "string"
    if "no-network" in report.isolation:
        assert net == "blocked"
    if "pid-namespace" in report.isolation:
        assert int(pids) <= 3
    if "read-only-fs" in report.isolation:
        assert write == "OSError"  # EROFS
        assert not outside.exists()
        assert secret == "PermissionError"
    assert secret_file.read_text() == "s3cr3t"


def test_this_host_gives_the_full_fence(tmp_path: Path, boxes: Path) -> None:
    """Root on Linux with util-linux: namespaces, read-only filesystem, no capabilities."""
    if os.geteuid() != 0 or sys.platform != "linux":
        pytest.skip("the full fence needs root on Linux")
    report = _validate(mb.write_skops(mb.logistic(), tmp_path / "m"), "sklearn", boxes)
    assert {"no-network", "pid-namespace", "read-only-fs", "no-new-privs"} <= set(report.isolation)
    assert "no-capabilities" in report.isolation or any(
        label.startswith("uid-") for label in report.isolation
    )


def test_without_namespaces_the_fences_that_remain_hold(
    tmp_path: Path,
    boxes: Path,
    listener: int,
    open_dir: Path,
    secret_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KONAN_AUTH__SECRET_KEY", "s3cr3t")
    sample = _probe_sample(tmp_path, listener, open_dir / "outside.txt", secret_file)
    artifact = tmp_path / "bundle"
    artifact.write_bytes(mb.custom_model(PROBE))
    report = _validate(artifact, "python", boxes, sample=sample, isolate_network=False)
    assert "no-network" not in report.isolation
    assert "rlimits" in report.isolation
    assert not [k for k in report.predictions[0].split() if k.startswith("KONAN_")]
    artifact.write_bytes(mb.custom_model("time.sleep(3600)", imports="import time"))
    error = _refusal(
        artifact=artifact,
        flavor="python",
        boxes=boxes,
        sample=sample,
        isolate_network=False,
        timeout_seconds=3,
    )
    assert error.extra["reason"] == "timeout"


# ---- mistakes a person can fix ---------------------------------------------------------------


def test_reference_data_without_a_column_the_model_needs(
    tmp_path: Path, boxes: Path, churn_sample: Path
) -> None:
    artifact = mb.write_skops(mb.churn_pipeline(), tmp_path / "m")
    error = _refusal(
        artifact=artifact,
        flavor="sklearn",
        boxes=boxes,
        sample=churn_sample,
        features=["tenure", "spend"],
    )
    assert error.extra["reason"] == "feature_mismatch"
    assert "lacks: plan" in error.detail


def test_a_column_count_the_model_does_not_expect(
    tmp_path: Path, boxes: Path, numeric_sample: Path
) -> None:
    artifact = mb.write_skops(mb.logistic(), tmp_path / "m")
    error = _refusal(
        artifact=artifact, flavor="sklearn", boxes=boxes, sample=numeric_sample, features=["a"]
    )
    assert "expects 4 features but 1 columns were given" in error.detail


def test_text_where_the_model_wants_numbers(tmp_path: Path, boxes: Path) -> None:
    frame = mb.numeric_frame()
    frame["a"] = "oops"
    sample = mb.write_parquet(frame, tmp_path / "s.parquet")
    artifact = mb.write_skops(mb.logistic(), tmp_path / "m")
    error = _refusal(
        artifact=artifact, flavor="sklearn", boxes=boxes, sample=sample, features=mb.NUMERIC
    )
    assert error.extra["reason"] == "predict_error"
    assert error.detail.startswith("prediction on 300 rows of the reference data failed: ")
    assert "wrong type" in error.detail


def test_a_load_error_names_the_exception_without_server_paths(tmp_path: Path, boxes: Path) -> None:
    artifact = tmp_path / "bundle"
    artifact.write_bytes(mb.custom_model("return X", imports="import xgboost_not_installed"))
    error = _refusal(artifact=artifact, flavor="python", boxes=boxes)
    assert error.extra["reason"] == "load_error"
    assert "ModuleNotFoundError: No module named 'xgboost_not_installed'" in error.detail
    artifact.write_bytes(mb.custom_model("return X", imports="open('/nonexistent/x')"))
    error = _refusal(artifact=artifact, flavor="python", boxes=boxes)
    assert "FileNotFoundError" in error.detail
    assert str(boxes) not in error.detail


def test_a_corrupt_member_is_refused(tmp_path: Path, boxes: Path) -> None:
    data = bytearray(mb.write_skops(mb.logistic(), tmp_path / "m").read_bytes())
    at = data.index(b"\x93NUMPY") + 200  # inside the first stored array
    data[at] ^= 0xFF
    artifact = tmp_path / "corrupt"
    artifact.write_bytes(bytes(data))
    error = _refusal(artifact=artifact, flavor="sklearn", boxes=boxes)
    assert error.extra["reason"] == "invalid_artifact"
    assert "is corrupt: Bad CRC-32" in error.detail


def test_wall_time_of_a_validation(tmp_path: Path, boxes: Path, numeric_sample: Path) -> None:
    artifact = mb.write_onnx(mb.logistic(), tmp_path / "m")
    report = _validate(artifact, "onnx", boxes, sample=numeric_sample, features=mb.NUMERIC)
    assert report.wall_seconds >= report.load_seconds + report.predict_seconds
    assert report.wall_seconds < 30


def test_a_result_forged_by_the_model_cannot_change_the_error_payload(
    tmp_path: Path, boxes: Path
) -> None:
    forged = {
        "ok": False,
        "reason": "x" * 100,
        "message": "forged",
        "extra": {"code": "ok", "detail": "all good", "untrusted_types": ["a"] * 500},
    }
    body = f"open('result.json', 'w').write({json.dumps(forged)!r}); os._exit(0)"
    artifact = tmp_path / "bundle"
    artifact.write_bytes(mb.custom_model("return X", imports=f"import os; {body}"))
    error = _refusal(artifact=artifact, flavor="python", boxes=boxes)
    payload = error.to_payload()
    assert payload["code"] == "invalid_input"
    assert payload["detail"] == "forged"
    assert set(payload) == {"code", "detail", "reason", "untrusted_types"}
    assert len(payload["reason"]) == 40
    assert len(payload["untrusted_types"]) == 200


def test_a_malformed_report_is_an_error_not_a_crash(tmp_path: Path, boxes: Path) -> None:
    forged = {"ok": True, "report": {"flavor": "python", "output_kind": "nonsense"}}
    body = f"open('result.json', 'w').write({json.dumps(forged)!r}); os._exit(0)"
    artifact = tmp_path / "bundle"
    artifact.write_bytes(mb.custom_model("return X", imports=f"import os; {body}"))
    error = _refusal(artifact=artifact, flavor="python", boxes=boxes)
    assert error.extra["reason"] == "crashed"
    assert "malformed result" in error.detail
