"""Registration compiles scikit-learn models to ONNX (kept only when it answers exactly like the
original on the reference sample) and profiles the model's predictions on that sample; a model
that cannot be compiled still registers, with the reason, and leaves nothing behind."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from konan.registry.binning import categorical_bins, numeric_bins
from konan.registry.orm import ModelVersion
from konan.registry.sandbox import SandboxLimits, validate_model
from konan.serving.flavors.onnx import load_onnx
from tests.registry import builders
from tests.registry.test_registry_api import Registry, _registry

pytestmark = pytest.mark.compile_onnx  # KONAN_REGISTRY__COMPILE_ONNX=true (off elsewhere)

SAMPLE_ROWS = 200  # KONAN_REGISTRY__SAMPLE_ROWS default: the first rows of the reference
TREE = "sklearn.tree._tree.Tree"
FOREST = [
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    TREE,
]


@pytest.fixture(params=["local", "s3"])
def registry(
    request: pytest.FixtureRequest, tmp_path: Path, db_url: str, engine: Engine
) -> Iterator[Registry]:
    yield from _registry(request, tmp_path, db_url, engine, request.param)


@pytest.fixture
def local_registry(
    request: pytest.FixtureRequest, tmp_path: Path, db_url: str, engine: Engine
) -> Iterator[Registry]:
    yield from _registry(request, tmp_path, db_url, engine, "local")


@pytest.fixture(scope="module")
def churn() -> pd.DataFrame:
    return builders.reference_frame()


@pytest.fixture(scope="module")
def numbers() -> pd.DataFrame:
    return builders.numeric_frame()


def row(reg: Registry, version: int = 1) -> dict[str, Any]:
    with Session(reg.engine) as session:
        found = session.scalars(sa.select(ModelVersion).where(ModelVersion.version == version))
        version_row = found.one()
        return {
            "compiled_flavor": version_row.compiled_flavor,
            "compiled_sha256": version_row.compiled_sha256,
            "prediction_profile": version_row.prediction_profile,
            "artifact_sha256": version_row.artifact_sha256,
        }


def stored_objects(reg: Registry) -> set[str]:
    root = Path(reg.settings.artifacts_uri)
    return {p.name for p in root.rglob("*") if p.is_file()}


def compiled_answers(reg: Registry, sha256: str, tmp_path: Path) -> Any:
    path = tmp_path / "compiled.onnx"
    with reg.store.open(sha256) as fh:
        path.write_bytes(fh.read())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    return load_onnx(path)


def registered(
    registry: Registry, artifact: bytes, reference: pd.DataFrame, metadata: dict[str, Any]
) -> dict[str, Any]:
    """A new model with `artifact` as its first version and `reference` (as CSV) as its
    reference data; the registration's 201 body."""
    registry.create_model()
    response = registry.upload(artifact, metadata=metadata, reference=builders.csv_bytes(reference))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_logistic_regression_is_compiled_and_its_predictions_profiled(
    registry: Registry, numbers: pd.DataFrame, tmp_path: Path
) -> None:
    model = builders.numeric_classifier(numbers)
    body = registered(registry, builders.skops_bytes(model), numbers, {"target": "y"})
    compiled = body["compiled"]
    assert compiled["flavor"] == "onnx"
    assert compiled["skipped"] is None
    assert registry.store.exists(compiled["sha256"])
    stored = row(registry)
    assert (stored["compiled_flavor"], stored["compiled_sha256"]) == ("onnx", compiled["sha256"])
    assert stored["artifact_sha256"] == body["sha256"] != compiled["sha256"]
    assert "konan.compile" not in body["tags"]

    features = numbers[["a", "b", "c", "d"]]
    sample = features.iloc[:SAMPLE_ROWS]
    expected = {
        "bins": {"__prediction__": categorical_bins(model.predict(sample)).to_json()},
        "rows": SAMPLE_ROWS,
        "source": "reference_sample",
    }
    assert stored["prediction_profile"] == expected
    assert body["prediction_profile"] == expected

    if registry.settings.artifacts_uri.startswith("s3://"):
        return
    onnx_model = compiled_answers(registry, compiled["sha256"], tmp_path)
    # Fitted on named columns: the compiled model takes them by name, in any order.
    columns = {n: features[n].to_numpy() for n in ["d", "c", "b", "a"]}
    labels, proba = onnx_model.predict_with_proba(columns)
    assert labels.tolist() == model.predict(features).tolist()
    assert np.abs(proba - model.predict_proba(features)).max() < 1e-5


def test_a_random_forest_is_compiled(local_registry: Registry, numbers: pd.DataFrame) -> None:
    from sklearn.ensemble import RandomForestClassifier

    features = numbers[["a", "b", "c", "d"]]
    model = RandomForestClassifier(100, max_depth=10, random_state=0).fit(features, numbers["y"])
    body = registered(
        local_registry,
        builders.skops_bytes(model),
        numbers,
        {"target": "y", "trusted_types": FOREST},
    )
    assert body["compiled"]["flavor"] == "onnx"
    assert row(local_registry)["compiled_sha256"] == body["compiled"]["sha256"]


def test_a_column_transformer_pipeline_with_strings_is_compiled_one_input_per_column(
    local_registry: Registry, churn: pd.DataFrame, tmp_path: Path
) -> None:
    model = builders.pipeline_classifier(churn)
    body = registered(local_registry, builders.skops_bytes(model), churn, {"target": "churned"})
    compiled = body["compiled"]
    assert compiled["flavor"] == "onnx", compiled
    onnx_model = compiled_answers(local_registry, compiled["sha256"], tmp_path)
    # The inputs are the signature's feature names, which the model server validates.
    assert onnx_model.feature_names == builders.FEATURES
    frame = churn[builders.FEATURES]
    labels = onnx_model.predict({n: frame[n].to_numpy() for n in builders.FEATURES})
    assert labels.tolist() == model.predict(frame).tolist()


def test_a_regressor_is_compiled_within_tolerance_and_profiled_into_numeric_bins(
    local_registry: Registry, numbers: pd.DataFrame
) -> None:
    model = builders.regressor(numbers)
    local_registry.create_model(task="regression")
    reference = numbers[["a", "b", "c", "d"]]
    response = local_registry.upload(
        builders.skops_bytes(model),
        reference=builders.parquet_bytes(reference),  # exact floats, unlike a CSV round trip
        reference_name="ref.parquet",
    )
    assert response.status_code == 201, response.text
    assert response.json()["compiled"]["flavor"] == "onnx"
    profile = row(local_registry)["prediction_profile"]
    expected = numeric_bins(model.predict(reference.iloc[:SAMPLE_ROWS])).to_json()
    assert (profile["rows"], profile["source"]) == (SAMPLE_ROWS, "reference_sample")
    assert list(profile["bins"]) == ["__prediction__"]
    bins = profile["bins"]["__prediction__"]
    assert (bins["kind"], bins["counts"]) == ("numeric", expected["counts"])
    # The sandbox's matrix layout can change a dot product's last bit: equal to 1e-12.
    np.testing.assert_allclose(bins["edges"], expected["edges"], rtol=1e-12)


def test_a_model_skl2onnx_cannot_convert_registers_with_the_reason(
    local_registry: Registry, numbers: pd.DataFrame
) -> None:
    features = numbers[["a", "b", "c", "d"]].to_numpy()
    model = builders.MarginClassifier().fit(features, numbers["y"])
    local_registry.create_model()
    before = stored_objects(local_registry)
    response = local_registry.upload(
        builders.pickle_bytes(model),
        metadata={"target": "y", "trusted": True, "flavor": "pickle"},
        reference=builders.csv_bytes(numbers),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["compiled"]["flavor"] is None
    assert "skl2onnx cannot convert this model" in body["compiled"]["skipped"]
    assert "MarginClassifier" in body["compiled"]["skipped"]
    assert body["tags"]["konan.compile"].startswith("skipped: skl2onnx cannot convert")
    # Tag edits keep the reason (it is the registry's, not the user's).
    patched = local_registry.client.patch(
        "/api/v1/models/churn/versions/1",
        json={"tags": {"team": "growth", "konan.compile": "forged"}},
        headers=local_registry.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["tags"] == {
        "team": "growth",
        "konan.compile": body["tags"]["konan.compile"],
    }
    assert patched.json()["compiled"] == body["compiled"]
    assert row(local_registry)["compiled_sha256"] is None
    # Only the pickle and the reference data were stored; the profile is still written.
    assert len(stored_objects(local_registry) - before) == 2
    assert row(local_registry)["prediction_profile"]["rows"] == SAMPLE_ROWS
    assert local_registry.leftover_temp_files() == []


def test_a_conversion_that_flips_labels_in_float32_is_refused(local_registry: Registry) -> None:
    frame = builders.float32_flipping_frame()
    artifact = builders.skops_bytes(builders.float32_flipping_classifier())
    body = registered(local_registry, artifact, frame, {"target": "y"})
    assert body["compiled"]["flavor"] is None
    assert "labels differ from the original's on 100 of 200 rows" in body["compiled"]["skipped"]
    assert row(local_registry)["compiled_sha256"] is None
    # No orphan: exactly the model and the reference data are stored, no temp file is left.
    expected = {
        hashlib.sha256(artifact).hexdigest(),
        hashlib.sha256(builders.csv_bytes(frame)).hexdigest(),
    }
    assert stored_objects(local_registry) == expected
    assert local_registry.leftover_temp_files() == []


def test_without_reference_data_nothing_is_compiled_or_profiled(
    local_registry: Registry, numbers: pd.DataFrame
) -> None:
    local_registry.create_model()
    signature = {
        "inputs": [{"name": n, "type": "float"} for n in ["a", "b", "c", "d"]],
        "outputs": {"kind": "label", "type": "integer", "classes": [0, 1], "probabilities": True},
    }
    response = local_registry.upload(
        builders.skops_bytes(builders.numeric_classifier(numbers)),
        metadata={"signature": signature},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert "no reference data" in body["compiled"]["skipped"]
    assert body["prediction_profile"] is None
    assert row(local_registry) == {
        "compiled_flavor": None,
        "compiled_sha256": None,
        "prediction_profile": None,
        "artifact_sha256": body["sha256"],
    }


def test_onnx_and_custom_models_are_not_compiled(
    local_registry: Registry, numbers: pd.DataFrame
) -> None:
    body = registered(
        local_registry,
        builders.onnx_bytes(builders.numeric_classifier(numbers)),
        numbers,
        {"target": "y"},
    )
    assert body["compiled"] is None
    assert row(local_registry)["prediction_profile"]["rows"] == SAMPLE_ROWS


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_with_compiling_turned_off_by_setting_the_original_registers_with_the_reason(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db_url: str,
    engine: Engine,
    numbers: pd.DataFrame,
    backend: str,
) -> None:
    # The setting given explicitly, over the environment this module turns compiling on with.
    for reg in _registry(request, tmp_path, db_url, engine, backend, compile_onnx=False):
        assert reg.settings.registry.compile_onnx is False
        reg.create_model()
        model = builders.numeric_classifier(numbers)
        response = reg.upload(
            builders.skops_bytes(model),
            metadata={"target": "y"},
            reference=builders.csv_bytes(numbers),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        reason = "disabled by setting (KONAN_REGISTRY__COMPILE_ONNX=false)"
        assert body["compiled"]["flavor"] is None
        assert body["compiled"]["sha256"] is None
        assert body["compiled"]["skipped"].startswith(reason)
        assert body["tags"]["konan.compile"].startswith(f"skipped: {reason}")
        shown = reg.client.get("/api/v1/models/churn/versions/1", headers=reg.headers).json()
        assert shown["compiled"] == body["compiled"]
        stored = row(reg)
        assert (stored["compiled_flavor"], stored["compiled_sha256"]) == (None, None)
        # Validation still ran on the sample: the prediction profile is there.
        assert stored["prediction_profile"]["rows"] == SAMPLE_ROWS
        if backend == "local":  # the model and its reference data, no compiled object
            assert body["sha256"] in stored_objects(reg)
            assert len(stored_objects(reg)) == 2

        # A flavor Konan never compiles says nothing about the setting.
        reg.create_model("plain")
        onnx = reg.upload(
            builders.onnx_bytes(model),
            model="plain",
            metadata={"target": "y"},
            reference=builders.csv_bytes(numbers),
        )
        assert onnx.status_code == 201, onnx.text
        assert onnx.json()["compiled"] is None
        assert "konan.compile" not in onnx.json()["tags"]


def test_the_setting_turns_compiling_on_over_the_environment(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db_url: str,
    engine: Engine,
    numbers: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KONAN_REGISTRY__COMPILE_ONNX", "false")
    for reg in _registry(request, tmp_path, db_url, engine, "local", compile_onnx=True):
        body = registered(
            reg,
            builders.skops_bytes(builders.numeric_classifier(numbers)),
            numbers,
            {"target": "y"},
        )
        assert body["compiled"]["flavor"] == "onnx"
        assert "konan.compile" not in body["tags"]
        assert len(stored_objects(reg)) == 3


def test_compiled_fields_are_immutable(local_registry: Registry, numbers: pd.DataFrame) -> None:
    local_registry.create_model()
    local_registry.upload(
        builders.skops_bytes(builders.numeric_classifier(numbers)),
        metadata={"target": "y"},
        reference=builders.csv_bytes(numbers),
    )
    before = row(local_registry)
    for field in ("compiled_sha256", "compiled", "prediction_profile"):
        response = local_registry.client.patch(
            "/api/v1/models/churn/versions/1",
            json={field: None, "tags": {}},
            headers=local_registry.headers,
        )
        assert response.status_code == 422, response.text
        assert field in response.json()["detail"]
    assert row(local_registry) == before


def test_a_failed_commit_leaves_no_compiled_object(
    local_registry: Registry, numbers: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_registry.create_model()
    original_commit = Session.commit

    def failing_commit(self: Session) -> None:
        if any(isinstance(o, ModelVersion) for o in self.identity_map.values()):
            raise RuntimeError("the database went away")
        original_commit(self)

    monkeypatch.setattr(Session, "commit", failing_commit)
    with pytest.raises(RuntimeError, match="went away"):
        local_registry.upload(
            builders.skops_bytes(builders.numeric_classifier(numbers)),
            metadata={"target": "y"},
            reference=builders.csv_bytes(numbers),
        )
    monkeypatch.undo()
    assert stored_objects(local_registry) == set()
    assert local_registry.version_count() == 0
    assert local_registry.leftover_temp_files() == []


def test_a_compiled_object_another_version_uses_is_never_cleaned_up(
    local_registry: Registry, numbers: pd.DataFrame
) -> None:
    from konan.registry.api import _cleanup_new_objects

    local_registry.create_model()
    response = local_registry.upload(
        builders.skops_bytes(builders.numeric_classifier(numbers)),
        metadata={"target": "y"},
        reference=builders.csv_bytes(numbers),
    )
    sha = response.json()["compiled"]["sha256"]
    state = local_registry.client.app.state.konan  # type: ignore[attr-defined]
    _cleanup_new_objects(state, [sha])
    assert local_registry.store.exists(sha)


def test_a_zero_tolerance_refuses_float32_probabilities(
    tmp_path: Path, numbers: pd.DataFrame
) -> None:
    """The tolerance is what decides: float32 probabilities are ~1e-7 off, so atol 0 refuses."""
    features = numbers[["a", "b", "c", "d"]]
    artifact = tmp_path / "model.skops"
    artifact.write_bytes(skops.io.dumps(builders.numeric_classifier(numbers)))
    sample = tmp_path / "sample.parquet"
    features.to_parquet(sample)
    for atol, compiled in ((0.0, False), (1e-5, True)):
        dest = tmp_path / f"compiled-{atol}.onnx"
        report = validate_model(
            artifact,
            flavor="sklearn",
            sample=sample,
            feature_names=list(features.columns),
            trusted_types=[],
            allow_pickle=False,
            limits=SandboxLimits(compile_atol=atol),
            compiled_dest=dest,
        )
        assert (report.compiled is not None) is compiled
        assert dest.exists() is compiled
        if not compiled:
            assert report.compile_skipped is not None
            assert "probabilities differ from the original's by up to" in report.compile_skipped
            assert "(tolerance 0)" in report.compile_skipped


def _validate_trusted_pickle(
    model: object, numbers: pd.DataFrame, tmp_path: Path, limits: SandboxLimits
) -> Any:
    features = numbers[["a", "b", "c", "d"]]
    artifact = tmp_path / "model.pkl"
    artifact.write_bytes(builders.pickle_bytes(model))
    sample = tmp_path / "sample.parquet"
    features.to_parquet(sample)
    return validate_model(
        artifact,
        flavor="pickle",
        sample=sample,
        feature_names=list(features.columns),
        trusted_types=[],
        allow_pickle=True,
        limits=limits,
        compiled_dest=tmp_path / "compiled.onnx",
    )


def test_a_compile_that_runs_out_of_time_still_validates(
    tmp_path: Path, numbers: pd.DataFrame
) -> None:
    """The wall clock ends the sandbox while it compiles: the model validated, so the report
    stands and says why nothing was compiled."""
    features = numbers[["a", "b", "c", "d"]].to_numpy()
    model = builders.SlowToCompile().fit(features, numbers["y"])
    # Validation takes ~2-3 s of wall time (up to ~8 s on a loaded 2-vCPU machine): 20 s leaves
    # it room while the test waits out the whole limit.
    report = _validate_trusted_pickle(model, numbers, tmp_path, SandboxLimits(timeout_seconds=20))
    assert report.compiled is None
    assert report.compile_skipped == "compiling did not finish within the sandbox's 20 s"
    assert report.sample_rows == len(numbers)
    assert not (tmp_path / "compiled.onnx").exists()


def test_a_compile_that_uses_up_the_cpu_limit_still_validates(
    tmp_path: Path, numbers: pd.DataFrame
) -> None:
    features = numbers[["a", "b", "c", "d"]].to_numpy()
    model = builders.BurnsCpuWhenCompiled().fit(features, numbers["y"])
    # Validation uses ~2.5 s of CPU (imports included); the spinning compile the rest.
    limits = SandboxLimits(timeout_seconds=60, cpu_seconds=7)
    report = _validate_trusted_pickle(model, numbers, tmp_path, limits)
    assert report.compiled is None
    assert report.compile_skipped == "compiling used up the sandbox's CPU time limit"
    assert report.sample_rows == len(numbers)
    assert not (tmp_path / "compiled.onnx").exists()


def test_the_serving_spec_names_the_compiled_artifact_beside_the_original(
    local_registry: Registry, numbers: pd.DataFrame
) -> None:
    from konan.deployments.orm import Deployment
    from konan.deployments.reconciler import desired_state

    local_registry.create_model()
    body = local_registry.upload(
        builders.skops_bytes(builders.numeric_classifier(numbers)),
        metadata={"target": "y"},
        reference=builders.csv_bytes(numbers),
    ).json()
    deployed = local_registry.client.post(
        "/api/v1/deployments",
        json={"name": "churn-live", "model": "churn", "version": 1},
        headers=local_registry.headers,
    )
    assert deployed.status_code == 201, deployed.text
    state = local_registry.client.app.state.konan  # type: ignore[attr-defined]
    with state.session_factory() as session:
        deployment = session.scalar(sa.select(Deployment).where(Deployment.name == "churn-live"))
        spec = desired_state(session, deployment, state.settings, state.jwt_secret).spec
    served = spec.versions[0]
    assert served.sha256 == body["sha256"]  # the original stays the version's artifact
    assert served.flavor == "sklearn"
    assert served.compiled is not None
    assert (served.compiled.flavor, served.compiled.sha256) == ("onnx", body["compiled"]["sha256"])
