"""Model servers prefer the ONNX artifact compiled at registration, answer exactly like the
scikit-learn original, and fall back to the original (saying why) when the compiled one cannot
be used. The compiled artifacts here come from the registry's real compile path (the sandbox)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io

from konan.registry.sandbox import SandboxLimits, validate_model
from konan.serving.metrics import ServingMetrics
from konan.serving.spec import CompiledArtifact, ServedVersion, ServingSpec
from konan.serving.versions import ModelLoader
from tests.serving import model_builders as mb
from tests.serving.serving_harness import (
    CHURN_SIGNATURE,
    NUMERIC_SIGNATURE,
    Deployment,
    KeyServer,
    ServerProcess,
    served,
    spec,
)

pytestmark = pytest.mark.compile_onnx  # about compiled artifacts: KONAN_REGISTRY__COMPILE_ONNX on

KEY = "kn_compiled_artifacts_key_0001"
ROWS = 1000


def compile_in_sandbox(model: object, sample: pd.DataFrame, tmp: Path) -> tuple[bytes, bytes]:
    """The skops bytes and the ONNX bytes the registration sandbox made from them."""
    data = skops.io.dumps(model)
    artifact = tmp / "model.skops"
    artifact.write_bytes(data)
    parquet = mb.write_parquet(sample, tmp / "sample.parquet")
    report = validate_model(
        artifact,
        flavor="sklearn",
        sample=parquet,
        feature_names=list(sample.columns),
        trusted_types=skops.io.get_untrusted_types(data=data),
        allow_pickle=False,
        limits=SandboxLimits(max_sample_rows=300),
        compiled_dest=tmp / "compiled.onnx",
    )
    assert report.compiled is not None, report.compile_skipped
    return data, report.compiled.path.read_bytes()


def with_compiled(version: ServedVersion, sha256: str) -> ServedVersion:
    return version.model_copy(update={"compiled": CompiledArtifact(flavor="onnx", sha256=sha256)})


def churn_rows(n: int) -> pd.DataFrame:
    frame, _ = mb.churn_frame(n)
    return frame


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyServer]:
    server = KeyServer().start()
    server.add(KEY)
    yield server
    server.stop()


@pytest.mark.parametrize("kind", ["forest", "pipeline"])
def test_the_server_serves_the_compiled_model_with_identical_labels_on_1000_rows(
    kind: str, tmp_path: Path, keys: KeyServer
) -> None:
    if kind == "forest":
        model: Any = mb.forest()
        rng = np.random.default_rng(11)
        frame = pd.DataFrame(rng.normal(size=(ROWS, 4)) * 2, columns=mb.NUMERIC)
        signature = NUMERIC_SIGNATURE
    else:
        model = mb.churn_pipeline()
        frame = churn_rows(ROWS)
        signature = CHURN_SIGNATURE
    original, compiled = compile_in_sandbox(model, frame.iloc[:300], tmp_path)
    deployment = Deployment(tmp_path / "deployment")
    version = served(
        1,
        deployment.put(original),
        flavor="sklearn",
        signature=signature,
        trusted_types=skops.io.get_untrusted_types(data=original),
    )
    deployment.write(spec([with_compiled(version, deployment.put(compiled))], keys.url))
    server = ServerProcess(deployment)
    try:
        server.wait_ready()
        rows = frame.to_dict(orient="records")
        response = server.predict({"inputs": rows}, key=KEY)
        assert response.status_code == 200, response.text
        body = response.json()
        expected = model.predict(frame if kind == "pipeline" else frame.to_numpy())
        assert body["predictions"] == expected.tolist()  # same labels, same JSON types
        proba = model.predict_proba(frame if kind == "pipeline" else frame.to_numpy())
        assert np.abs(np.asarray(body["probabilities"]) - proba).max() < 1e-5
        assert "compiled onnx" in server.stderr()
        assert server.stats()["versions"][0]["artifact"] == "compiled"
        assert server.stats()["versions"][0]["compiled_fallback"] is None
    finally:
        server.stop()


def test_a_missing_compiled_artifact_falls_back_to_the_original(
    tmp_path: Path, keys: KeyServer
) -> None:
    model = mb.logistic()
    deployment = Deployment(tmp_path)
    data = skops.io.dumps(model)
    version = with_compiled(
        served(1, deployment.put(data), flavor="sklearn", signature=NUMERIC_SIGNATURE),
        "0" * 64,  # never stored
    )
    deployment.write(spec([version], keys.url))
    server = ServerProcess(deployment)
    try:
        server.wait_ready()
        row = {"a": 0.3, "b": -1.0, "c": 0.5, "d": 2.0}
        response = server.predict({"inputs": [row]}, key=KEY)
        assert response.status_code == 200, response.text
        assert (
            response.json()["predictions"]
            == model.predict(np.array([[0.3, -1.0, 0.5, 2.0]])).tolist()
        )
        log = server.stderr()
        assert "not serving its compiled onnx artifact (artifact_missing" in log
        served_version = server.stats()["versions"][0]
        assert served_version["flavor"] == "sklearn"
        assert served_version["artifact"] == "original"
        assert "artifact_missing" in served_version["compiled_fallback"]
    finally:
        server.stop()


def loader(deployment: Deployment) -> ModelLoader:
    return ModelLoader(
        deployment.store,
        cache_dir=deployment.root / "cache",
        workdir=deployment.root / "work",
        metrics=ServingMetrics(),
    )


def test_the_loader_says_which_artifact_serves_and_why_not_the_compiled_one(
    tmp_path: Path,
) -> None:
    frame = pd.DataFrame(np.random.default_rng(5).normal(size=(200, 4)), columns=mb.NUMERIC)
    original, compiled = compile_in_sandbox(mb.logistic(), frame, tmp_path)
    deployment = Deployment(tmp_path / "deployment")
    base = served(1, deployment.put(original), flavor="sklearn", signature=NUMERIC_SIGNATURE)
    good = with_compiled(base, deployment.put(compiled))
    # Bytes that are not an ONNX model, stored under their own (correct) address.
    broken = with_compiled(base, deployment.put(b"not an onnx model"))
    keys_url = "http://127.0.0.1:9/keys"
    table = loader(deployment).build(spec([good], keys_url), None)
    chosen = table.versions[1]
    assert (chosen.artifact, chosen.fallback, chosen.model.flavor) == ("compiled", None, "onnx")

    table = loader(deployment).build(spec([broken], keys_url), None)
    chosen = table.versions[1]
    assert (chosen.artifact, chosen.model.flavor) == ("original", "sklearn")
    assert chosen.fallback is not None
    assert "not a readable ONNX model" in chosen.fallback

    # Specs without a compiled artifact load exactly as before.
    table = loader(deployment).build(spec([base], keys_url), None)
    assert (table.versions[1].artifact, table.versions[1].fallback) == ("original", None)


def test_the_spec_refuses_a_malformed_compiled_digest() -> None:
    with pytest.raises(ValueError, match="sha256"):
        ServingSpec.model_validate(
            {
                **spec([served(1, "a" * 64)], "http://127.0.0.1:9/keys").model_dump(),
                "versions": [
                    {
                        **served(1, "a" * 64).model_dump(),
                        "compiled": {"flavor": "onnx", "sha256": "../../etc/passwd"},
                    }
                ],
            }
        )
