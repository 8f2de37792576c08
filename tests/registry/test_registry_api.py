"""The registry over REST: register, fetch and load each flavor on both artifact backends, and
every bad upload refused with a clear 4xx that leaves nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from konan.backends.artifacts.base import ArtifactStore
from konan.core.settings import Settings
from konan.db.engine import make_session_factory, unit_of_work
from konan.governance import service as governance
from konan.registry.orm import DatasetVersion, ModelVersion
from konan.server.app import create_app
from tests.conftest import ACCESS_KEY, ADMIN_PASSWORD, SECRET_KEY
from tests.registry import builders

# ---- fixtures -------------------------------------------------------------------------------


@dataclass
class Registry:
    client: TestClient
    headers: dict[str, str]
    store: ArtifactStore
    engine: Engine
    settings: Settings

    def create_model(self, name: str = "churn", task: str = "classification") -> None:
        response = self.client.post(
            "/api/v1/models", json={"name": name, "task": task}, headers=self.headers
        )
        assert response.status_code == 201, response.text

    def upload(
        self,
        artifact: bytes,
        *,
        model: str = "churn",
        metadata: dict[str, Any] | None = None,
        reference: bytes | None = None,
        reference_name: str = "ref.csv",
        headers: dict[str, str] | None = None,
        artifact_name: str = "model.bin",
    ) -> Any:
        files: dict[str, Any] = {"artifact": (artifact_name, artifact, "application/octet-stream")}
        if reference is not None:
            files["reference_data"] = (reference_name, reference, "text/csv")
        return self.client.post(
            f"/api/v1/models/{model}/versions",
            data={"metadata": json.dumps(metadata or {})},
            files=files,
            headers={**self.headers, **(headers or {})},
        )

    def version_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(ModelVersion)).scalar_one()

    def dataset_version_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(DatasetVersion)).scalar_one()

    def stored(self, data: bytes) -> bool:
        return self.store.exists(hashlib.sha256(data).hexdigest())

    def leftover_temp_files(self) -> list[Path]:
        tmp = self.settings.tmp_dir
        return [p for p in tmp.rglob("*")] if tmp.exists() else []


def _artifact_settings(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> dict[str, Any]:
    if backend == "local":
        return {"uri": str(tmp_path / "artifacts")}
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("bucket")
    return {
        "uri": f"s3://{bucket}/konan",
        "s3_endpoint_url": endpoint,
        "s3_access_key_id": ACCESS_KEY,
        "s3_secret_access_key": SECRET_KEY,
    }


def _registry(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db_url: str,
    engine: Engine,
    backend: str,
    **registry: Any,
) -> Iterator[Registry]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        artifacts=_artifact_settings(backend, request, tmp_path),
        registry={"sandbox_timeout_seconds": 60, **registry},
    )
    with unit_of_work(make_session_factory(engine)) as session:
        governance.bootstrap(session, ADMIN_PASSWORD)
    app: FastAPI = create_app(settings)
    with TestClient(app) as client:
        token = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        yield Registry(
            client,
            {"Authorization": f"Bearer {token}"},
            app.state.konan.artifacts,
            engine,
            settings,
        )
    app.state.konan.engine.dispose()


@pytest.fixture(params=["local", "s3"])
def registry(
    request: pytest.FixtureRequest, tmp_path: Path, db_url: str, engine: Engine
) -> Iterator[Registry]:
    """An app with an admin, on each database and each artifact backend."""
    yield from _registry(request, tmp_path, db_url, engine, request.param)


@pytest.fixture
def local_registry(
    request: pytest.FixtureRequest, tmp_path: Path, db_url: str, engine: Engine
) -> Iterator[Registry]:
    """The same on the local artifact folder only (for the many bad-input cases)."""
    yield from _registry(request, tmp_path, db_url, engine, "local", max_artifact_bytes=200_000)


@pytest.fixture(scope="module")
def frame() -> Any:
    return builders.reference_frame()


@pytest.fixture(scope="module")
def numbers() -> Any:
    return builders.numeric_frame()


# ---- round trips: each flavor, both backends ------------------------------------------------


def test_sklearn_pipeline_round_trip(registry: Registry, frame: Any) -> None:
    model = builders.pipeline_classifier(frame)
    artifact = builders.skops_bytes(model)
    registry.create_model()
    response = registry.upload(
        artifact,
        metadata={"metrics": {"auc": 0.91}, "params": {"C": 1.0}, "target": "churned"},
        reference=builders.csv_bytes(frame),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 1
    assert body["flavor"] == "sklearn"
    assert body["sha256"] == hashlib.sha256(artifact).hexdigest()
    inputs = {f["name"]: f for f in body["signature"]["inputs"]}
    assert list(inputs) == builders.FEATURES
    assert inputs["tenure"]["type"] == "float"
    assert inputs["visits"]["type"] == "integer"
    assert inputs["plan"]["categories"] == ["basic", "pro", "team"]
    assert body["signature"]["outputs"]["classes"] == [0, 1]
    assert body["signature"]["outputs"]["probabilities"] is True
    assert body["lineage"]["reference_dataset"] == {"name": "churn-reference", "version": 1}
    assert body["metrics"] == {"auc": 0.91}

    # Fetch it back through the API and load it: the same predictions as the original.
    download = registry.client.get(
        "/api/v1/models/churn/versions/1/artifact", headers=registry.headers
    )
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == body["sha256"]
    loaded = skops.io.loads(
        download.content, trusted=skops.io.get_untrusted_types(data=download.content)
    )
    rows = frame[builders.FEATURES].head(20)
    assert (loaded.predict(rows) == model.predict(rows)).all()
    assert registry.stored(artifact)
    assert registry.stored(builders.csv_bytes(frame))


def test_onnx_round_trip(registry: Registry, numbers: Any) -> None:
    model = builders.numeric_classifier(numbers)
    artifact = builders.onnx_bytes(model)
    registry.create_model("onnx-model")
    response = registry.upload(
        artifact,
        model="onnx-model",
        metadata={"target": "y"},
        reference=builders.parquet_bytes(numbers),
        reference_name="ref.parquet",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["flavor"] == "onnx"
    assert [f["name"] for f in body["signature"]["inputs"]] == ["a", "b", "c", "d"]
    download = registry.client.get(
        "/api/v1/models/onnx-model/versions/1/artifact", headers=registry.headers
    )
    import onnxruntime

    session = onnxruntime.InferenceSession(download.content, providers=["CPUExecutionProvider"])
    rows = numbers[["a", "b", "c", "d"]].head(25)
    x = rows.to_numpy(dtype=np.float32)
    labels = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert (labels == model.predict(rows)).all()


def test_custom_python_model_round_trip(registry: Registry, numbers: Any) -> None:
    artifact = builders.custom_zip()
    registry.create_model("custom")
    response = registry.upload(
        artifact,
        model="custom",
        metadata={"flavor": "python", "target": "y"},
        reference=builders.csv_bytes(numbers),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["flavor"] == "python"
    assert body["signature"]["outputs"]["kind"] == "label"
    download = registry.client.get(
        "/api/v1/models/custom/versions/1/artifact", headers=registry.headers
    )
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        assert "threshold.py" in zf.namelist()


def test_an_admin_trusted_joblib_model_round_trip(registry: Registry, numbers: Any) -> None:
    import joblib

    model = builders.numeric_classifier(numbers)
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=3)
    artifact = buffer.getvalue()
    registry.create_model("legacy")
    response = registry.upload(
        artifact,
        model="legacy",
        metadata={"flavor": "joblib", "trusted": True, "target": "y"},
        reference=builders.csv_bytes(numbers),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["flavor"], body["trusted"]) == ("joblib", True)
    download = registry.client.get(
        "/api/v1/models/legacy/versions/1/artifact", headers=registry.headers
    )
    assert hashlib.sha256(download.content).hexdigest() == body["sha256"]
    loaded = joblib.load(io.BytesIO(download.content))  # our own model, trusted by the test
    rows = numbers[["a", "b", "c", "d"]].head(10)
    assert (loaded.predict(rows) == model.predict(rows)).all()


def test_regression_model_with_explicit_signature(registry: Registry, numbers: Any) -> None:
    artifact = builders.skops_bytes(builders.regressor(numbers))
    registry.create_model("spend", task="regression")
    signature = {
        "inputs": [{"name": n, "type": "float"} for n in ["a", "b", "c", "d"]],
        "outputs": {"kind": "value", "type": "float"},
    }
    response = registry.upload(artifact, model="spend", metadata={"signature": signature})
    assert response.status_code == 201, response.text
    assert response.json()["signature"]["outputs"] == {
        "kind": "value",
        "type": "float",
        "classes": None,
        "probabilities": False,
    }


# ---- versions, lineage, immutability, aliases ----------------------------------------------


@pytest.mark.compile_onnx
def test_versions_number_up_and_identical_bytes_are_stored_once(
    local_registry: Registry, numbers: Any
) -> None:
    reg = local_registry
    artifact = builders.skops_bytes(builders.numeric_classifier(numbers))
    reg.create_model()
    ref = builders.csv_bytes(numbers)
    first = reg.upload(artifact, metadata={"target": "y"}, reference=ref)
    second = reg.upload(
        artifact,
        metadata={"target": "y", "parent_version": 1, "source_commit": "abc1234"},
        reference=ref,
    )
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json()["version"] == 2
    assert second.json()["lineage"]["parent_version"] == 1
    assert second.json()["lineage"]["source_commit"] == "abc1234"
    listed = reg.client.get("/api/v1/models/churn/versions", headers=reg.headers).json()
    assert [v["version"] for v in listed] == [1, 2]
    files = [p for p in Path(reg.settings.artifacts_uri).rglob("*") if p.is_file()]
    # one model file, one reference file, one compiled ONNX file, however many versions: the
    # same model compiles to the same bytes
    assert len(files) == 3
    assert listed[0]["compiled"]["sha256"] == listed[1]["compiled"]["sha256"]


def test_versions_are_immutable(local_registry: Registry, numbers: Any) -> None:
    reg = local_registry
    reg.create_model()
    reg.upload(
        builders.skops_bytes(builders.numeric_classifier(numbers)),
        metadata={"target": "y"},
        reference=builders.csv_bytes(numbers),
    )
    before = reg.client.get("/api/v1/models/churn/versions/1", headers=reg.headers).json()
    for field, value in [
        ("sha256", "0" * 64),
        ("status", "approved"),
        ("stage", "production"),
        ("created_by", "mallory"),
        ("artifact", "x"),
    ]:
        response = reg.client.patch(
            "/api/v1/models/churn/versions/1", json={field: value}, headers=reg.headers
        )
        assert response.status_code == 422, (field, response.text)
        assert field in response.json()["detail"]
    after = reg.client.get("/api/v1/models/churn/versions/1", headers=reg.headers).json()
    assert after == before
    tagged = reg.client.patch(
        "/api/v1/models/churn/versions/1", json={"tags": {"team": "growth"}}, headers=reg.headers
    )
    assert tagged.status_code == 200
    # The user's tags replace the old ones; registration's reason for not compiling stays.
    kept = {k: v for k, v in before["tags"].items() if k == "konan.compile"}
    assert tagged.json()["tags"] == {"team": "growth", **kept}


def test_aliases_move_with_full_history(local_registry: Registry, numbers: Any) -> None:
    reg = local_registry
    reg.create_model()
    artifact = builders.skops_bytes(builders.numeric_classifier(numbers))
    for _ in range(2):
        assert (
            reg.upload(
                artifact, metadata={"target": "y"}, reference=builders.csv_bytes(numbers)
            ).status_code
            == 201
        )
    put = reg.client.put(
        "/api/v1/models/churn/aliases/champion",
        json={"version": 1, "reason": "first release"},
        headers=reg.headers,
    )
    assert put.status_code == 200
    moved = reg.client.put(
        "/api/v1/models/churn/aliases/champion",
        json={"version": 2, "reason": "better auc"},
        headers=reg.headers,
    )
    assert moved.json()["version"] == 2
    missing = reg.client.put(
        "/api/v1/models/churn/aliases/champion", json={"version": 9}, headers=reg.headers
    )
    assert missing.status_code == 404
    history = reg.client.get("/api/v1/models/churn/aliases/history", headers=reg.headers).json()
    assert [(h["from_version"], h["to_version"], h["reason"], h["actor"]) for h in history] == [
        (None, 1, "first release", "admin"),
        (1, 2, "better auc", "admin"),
    ]
    model = reg.client.get("/api/v1/models/churn", headers=reg.headers).json()
    assert model["aliases"] == {"champion": 2}
    assert model["latest_version"] == 2


def test_idempotency_key_registers_once(local_registry: Registry, numbers: Any) -> None:
    reg = local_registry
    reg.create_model()
    artifact = builders.skops_bytes(builders.numeric_classifier(numbers))
    key = {"Idempotency-Key": "upload-42"}
    ref = builders.csv_bytes(numbers)
    first = reg.upload(artifact, metadata={"target": "y"}, reference=ref, headers=key)
    retry = reg.upload(artifact, metadata={"target": "y"}, reference=ref, headers=key)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json()["version"] == first.json()["version"] == 1
    other = builders.skops_bytes(builders.regressor(numbers))
    clash = reg.upload(other, metadata={"target": "y"}, reference=ref, headers=key)
    assert clash.status_code == 422
    assert "Idempotency-Key" in clash.json()["detail"]
    assert reg.version_count() == 1


# ---- bad input: a clear 4xx, nothing written ------------------------------------------------


def _assert_nothing_written(reg: Registry, *blobs: bytes) -> None:
    assert reg.version_count() == 0
    assert reg.dataset_version_count() == 0
    for blob in blobs:
        assert not reg.stored(blob)
    assert reg.leftover_temp_files() == []


@pytest.mark.parametrize(
    ("artifact", "metadata", "status", "fragment"),
    [
        (b"", {}, 422, "empty"),
        (b"\x00\x01garbage-bytes-that-are-no-model" * 10, {}, 422, "artifact"),
        (b"PK\x03\x04truncated", {}, 422, "zip"),
    ],
    ids=["empty", "junk", "truncated-zip"],
)
def test_unusable_artifacts_are_refused(
    local_registry: Registry,
    numbers: Any,
    artifact: bytes,
    metadata: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    local_registry.create_model()
    response = local_registry.upload(
        artifact, metadata={"target": "y", **metadata}, reference=builders.csv_bytes(numbers)
    )
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"].lower()
    _assert_nothing_written(local_registry, artifact, builders.csv_bytes(numbers))


def test_truncated_skops_file_is_refused(local_registry: Registry, numbers: Any) -> None:
    artifact = builders.skops_bytes(builders.numeric_classifier(numbers))[:-200]
    local_registry.create_model()
    response = local_registry.upload(
        artifact, metadata={"target": "y"}, reference=builders.csv_bytes(numbers)
    )
    assert response.status_code == 422, response.text
    _assert_nothing_written(local_registry, artifact)


def test_declared_flavor_must_match_the_bytes(local_registry: Registry, numbers: Any) -> None:
    artifact = builders.skops_bytes(builders.numeric_classifier(numbers))
    local_registry.create_model()
    response = local_registry.upload(
        artifact,
        metadata={"flavor": "onnx", "target": "y"},
        reference=builders.csv_bytes(numbers),
        artifact_name="model.onnx",
    )
    assert response.status_code == 422
    assert "onnx" in response.json()["detail"]
    _assert_nothing_written(local_registry, artifact)


def test_a_pickle_payload_never_runs(
    local_registry: Registry, numbers: Any, tmp_path: Path
) -> None:
    evil = builders.malicious_pickle(tmp_path / "pwned")
    local_registry.create_model()
    response = local_registry.upload(
        evil.data,
        metadata={"flavor": "sklearn", "target": "y"},
        reference=builders.csv_bytes(numbers),
        artifact_name="model.skops",
    )
    assert response.status_code == 422
    plain = local_registry.upload(
        evil.data, metadata={"target": "y"}, reference=builders.csv_bytes(numbers)
    )
    assert plain.status_code == 422
    assert "system" in plain.json()["detail"]  # names what it would import (os.system)
    assert not evil.marker.exists()
    _assert_nothing_written(local_registry, evil.data)


def test_only_an_admin_may_register_a_trusted_pickle(
    local_registry: Registry, numbers: Any, tmp_path: Path
) -> None:
    reg = local_registry
    reg.create_model()
    _user(reg, "mara", "maintainer")
    mara = _login(reg, "mara")
    evil = builders.malicious_pickle(tmp_path / "pwned")
    response = reg.client.post(
        "/api/v1/models/churn/versions",
        data={"metadata": json.dumps({"trusted": True})},
        files={"artifact": ("m.pkl", evil.data, "application/octet-stream")},
        headers=mara,
    )
    assert response.status_code == 403
    assert not evil.marker.exists()
    assert reg.version_count() == 0


def test_archive_entries_escaping_the_folder_are_refused(
    local_registry: Registry, numbers: Any
) -> None:
    artifact = builders.custom_zip({"../../escape.py": b"print('x')"})
    local_registry.create_model()
    response = local_registry.upload(
        artifact,
        metadata={"flavor": "python", "target": "y"},
        reference=builders.csv_bytes(numbers),
    )
    assert response.status_code == 422
    assert ".." in response.json()["detail"]
    _assert_nothing_written(local_registry, artifact)


def test_an_artifact_over_the_limit_is_413(local_registry: Registry, numbers: Any) -> None:
    big = b"\x08" + b"\x00" * 250_000  # limit is 200 kB in this fixture
    local_registry.create_model()
    response = local_registry.upload(big, reference=builders.csv_bytes(numbers))
    assert response.status_code == 413
    _assert_nothing_written(local_registry, big)


def test_a_declared_content_length_over_the_limit_is_413_before_reading(
    local_registry: Registry,
) -> None:
    local_registry.create_model()
    response = local_registry.client.post(
        "/api/v1/models/churn/versions",
        content=b"x" * 10,
        headers={
            **local_registry.headers,
            "content-type": "multipart/form-data; boundary=x",
            "content-length": str(10**12),
        },
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_reference_data_must_cover_the_models_features(
    local_registry: Registry, frame: Any
) -> None:
    artifact = builders.skops_bytes(builders.pipeline_classifier(frame))
    local_registry.create_model()
    partial = frame.drop(columns=["spend"])
    response = local_registry.upload(
        artifact, metadata={"target": "churned"}, reference=builders.csv_bytes(partial)
    )
    assert response.status_code == 422
    assert "spend" in response.json()["detail"]
    _assert_nothing_written(local_registry, artifact, builders.csv_bytes(partial))


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ("{not json", "metadata is not valid JSON"),
        (json.dumps({"flavour": "sklearn"}), "metadata.flavour"),
        (json.dumps({"metrics": {"auc": "high"}}), "metadata.metrics.auc"),
        (json.dumps({"source_commit": "$(rm -rf /)"}), "metadata.source_commit"),
    ],
)
def test_bad_metadata_is_422_naming_the_field(
    local_registry: Registry, numbers: Any, metadata: str, fragment: str
) -> None:
    local_registry.create_model()
    artifact = builders.skops_bytes(builders.numeric_classifier(numbers))
    response = local_registry.client.post(
        "/api/v1/models/churn/versions",
        data={"metadata": metadata},
        files={"artifact": ("m.skops", artifact, "application/octet-stream")},
        headers=local_registry.headers,
    )
    assert response.status_code == 422
    assert fragment in response.json()["detail"]
    _assert_nothing_written(local_registry, artifact)


def test_a_json_body_on_the_upload_route_is_415(local_registry: Registry) -> None:
    local_registry.create_model()
    response = local_registry.client.post(
        "/api/v1/models/churn/versions", json={"artifact": "x"}, headers=local_registry.headers
    )
    assert response.status_code == 415


@pytest.mark.parametrize(
    "name", ["Churn", "a b", "x;rm -rf", "../etc", "{{7*7}}", "", "a" * 64, "-lead"]
)
def test_model_names_are_checked(local_registry: Registry, name: str) -> None:
    response = local_registry.client.post(
        "/api/v1/models",
        json={"name": name, "task": "classification"},
        headers=local_registry.headers,
    )
    assert response.status_code == 422
    assert "name" in response.json()["detail"]


def test_duplicate_model_is_409(local_registry: Registry) -> None:
    local_registry.create_model()
    response = local_registry.client.post(
        "/api/v1/models",
        json={"name": "churn", "task": "regression"},
        headers=local_registry.headers,
    )
    assert response.status_code == 409


# ---- who may see and do what ----------------------------------------------------------------


def _user(reg: Registry, username: str, role: str | None, project: str = "default") -> None:
    created = reg.client.post(
        "/api/v1/users",
        json={"username": username, "password": f"{username}-password-1"},
        headers=reg.headers,
    )
    assert created.status_code == 201, created.text
    if role:
        member = reg.client.put(
            f"/api/v1/projects/{project}/members",
            json={"username": username, "role": role},
            headers=reg.headers,
        )
        assert member.status_code == 200, member.text


def _login(reg: Registry, username: str) -> dict[str, str]:
    token = reg.client.post(
        "/api/v1/auth/login", json={"username": username, "password": f"{username}-password-1"}
    ).json()["access_token"]
    reg.client.cookies.clear()
    return {"Authorization": f"Bearer {token}"}


def test_viewers_read_but_cannot_register_and_outsiders_see_nothing(
    local_registry: Registry, numbers: Any
) -> None:
    reg = local_registry
    reg.create_model()
    artifact = builders.skops_bytes(builders.numeric_classifier(numbers))
    assert (
        reg.upload(
            artifact, metadata={"target": "y"}, reference=builders.csv_bytes(numbers)
        ).status_code
        == 201
    )
    _user(reg, "vera", "viewer")
    _user(reg, "otto", None)
    vera, otto = _login(reg, "vera"), _login(reg, "otto")

    assert reg.client.get("/api/v1/models/churn/versions/1", headers=vera).status_code == 200
    upload = reg.client.post(
        "/api/v1/models/churn/versions",
        files={"artifact": ("m.skops", artifact, "application/octet-stream")},
        headers=vera,
    )
    assert upload.status_code == 403
    for path in [
        "/api/v1/models/churn",
        "/api/v1/models/churn/versions",
        "/api/v1/models/churn/versions/1",
        "/api/v1/models/churn/versions/1/artifact",
        "/api/v1/datasets/churn-reference/versions",
    ]:
        response = reg.client.get(path, headers=otto)
        assert response.status_code == 404, path
    assert reg.client.get("/api/v1/models", headers=otto).json() == []
    assert reg.version_count() == 1


def test_responses_never_show_storage_locations_or_credentials(
    registry: Registry, numbers: Any
) -> None:
    registry.create_model()
    response = registry.upload(
        builders.skops_bytes(builders.numeric_classifier(numbers)),
        metadata={"target": "y"},
        reference=builders.csv_bytes(numbers),
    )
    text = (
        response.text + registry.client.get("/api/v1/models/churn", headers=registry.headers).text
    )
    assert SECRET_KEY not in text
    assert "s3://" not in text
    assert str(registry.settings.data_dir) not in text


# ---- datasets -------------------------------------------------------------------------------


def test_dataset_versions_with_schema_stats_and_reference_bins(
    registry: Registry, frame: Any
) -> None:
    data = builders.parquet_bytes(frame)
    response = registry.client.post(
        "/api/v1/datasets",
        data={"metadata": json.dumps({"name": "churn-train", "description": "Q3 export"})},
        files={"file": ("train.parquet", data, "application/octet-stream")},
        headers=registry.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 1
    assert body["format"] == "parquet"
    assert body["row_count"] == len(frame)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    columns = {c["name"]: c["type"] for c in body["schema"]["columns"]}
    assert columns["plan"] == "string"
    assert columns["tenure"] == "float"
    assert set(body["reference_bins"]) >= {"tenure", "plan"}
    again = registry.client.post(
        "/api/v1/datasets",
        data={"metadata": json.dumps({"name": "churn-train"})},
        files={"file": ("train.csv", builders.csv_bytes(frame), "text/csv")},
        headers=registry.headers,
    )
    assert again.json()["version"] == 2
    listed = registry.client.get("/api/v1/datasets", headers=registry.headers).json()
    assert [(d["name"], d["latest_version"]) for d in listed] == [("churn-train", 2)]


def test_a_bad_dataset_is_refused_and_nothing_is_kept(local_registry: Registry) -> None:
    junk = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    response = local_registry.client.post(
        "/api/v1/datasets",
        data={"metadata": json.dumps({"name": "junk"})},
        files={"file": ("data.csv", junk, "text/csv")},
        headers=local_registry.headers,
    )
    assert response.status_code == 422
    _assert_nothing_written(local_registry, junk)
