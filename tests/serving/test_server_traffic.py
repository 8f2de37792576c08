"""Traffic policy in a real model server: canary share, sticky routing, shadows that never hurt
the primary (ADVERSARIAL F15), and model errors that answer 500 without internals."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from konan.serving.spec import ROUTE_KEY_HEADER, Traffic
from tests.serving.serving_harness import (
    ROW,
    Deployment,
    KeyServer,
    ServerProcess,
    onnx_logistic,
    python_model,
    served,
    spec,
    wait_for,
)

KEY = "kn_traffic_key_00000001"

SLOW_SHADOW = """
import time
import numpy as np

class Model:
    classes_ = [0, 1]

    def predict(self, X):
        if float(X["d"].iloc[0]) != 0.0:  # the warm-up row is all zeros: keep loading fast
            time.sleep(2)
        return (X["a"].to_numpy() > 0).astype(int)
"""

FAILING = """
import numpy as np

class Model:
    def predict(self, X):
        if (X["a"] > 100).any():
            raise ValueError("secret internals: /srv/models/weights.bin at 0xdeadbeef")
        return (X["a"].to_numpy() > 0).astype(int)
"""


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyServer]:
    server = KeyServer().start()
    server.add(KEY)
    yield server
    server.stop()


def start(deployment: Deployment, *args: str) -> ServerProcess:
    server = ServerProcess(deployment, *args)
    server.wait_ready()
    return server


def test_canary_share_follows_the_weight_and_sticky_callers_stay_put(
    tmp_path: Path, keys: KeyServer
) -> None:
    deployment = Deployment(tmp_path)
    first = deployment.put(onnx_logistic(tmp_path, c=1.0))
    second = deployment.put(onnx_logistic(tmp_path, c=0.01))
    traffic = Traffic(champion=1, canary=2, canary_weight=0.3)
    deployment.write(spec([served(1, first), served(2, second)], keys.url, traffic=traffic))
    server = start(deployment)
    try:
        versions = Counter(
            server.predict({"inputs": [ROW]}, key=KEY).json()["model_version"] for _ in range(400)
        )
        assert set(versions) == {1, 2}
        # 400 draws at p = 0.3: mean 120, sd 9.2; 80..160 is beyond 4 sd either way.
        assert 80 <= versions[2] <= 160, versions

        for caller in ("alice", "bob", "carol", "dave", "erin"):
            seen = {
                server.predict(
                    {"inputs": [ROW]}, key=KEY, headers={ROUTE_KEY_HEADER: caller}
                ).json()["model_version"]
                for _ in range(15)
            }
            assert len(seen) == 1, (caller, seen)
        callers = {
            server.predict(
                {"inputs": [ROW]}, key=KEY, headers={ROUTE_KEY_HEADER: f"user-{i}"}
            ).json()["model_version"]
            for i in range(60)
        }
        assert callers == {1, 2}  # sticky does not mean everyone on one version

        records = wait_for(
            lambda: [r for r in deployment.records() if r["role"] == "canary"] or None
        )
        assert {r["model_version_id"] for r in records} == {102}
    finally:
        server.stop()


def test_a_slow_shadow_leaves_primary_latency_alone_and_logs_as_shadow(
    tmp_path: Path, keys: KeyServer
) -> None:
    deployment = Deployment(tmp_path)
    champion = deployment.put(onnx_logistic(tmp_path))
    shadow = deployment.put(python_model(SLOW_SHADOW))
    traffic = Traffic(champion=1, shadow=2)
    deployment.write(
        spec([served(1, champion), served(2, shadow, flavor="python")], keys.url, traffic=traffic)
    )
    server = start(deployment, "--shadow-queue", "4")
    try:
        durations = []
        ids = []
        for _ in range(50):
            started = time.perf_counter()
            response = server.predict({"inputs": [{**ROW, "d": 1.0}]}, key=KEY)
            durations.append(time.perf_counter() - started)
            assert response.status_code == 200
            assert response.json()["model_version"] == 1
            ids.append(response.json()["request_id"])
        durations.sort()
        p99 = durations[int(len(durations) * 0.99) - 1]
        assert p99 < 0.5, durations[-5:]
        assert statistics.median(durations) < 0.1

        shadows = wait_for(
            lambda: [r for r in deployment.records() if r["role"] == "shadow"] or None,
            timeout=20,
        )
        assert all(r["request_id"] in ids for r in shadows)
        assert all(r["model_version_id"] == 102 for r in shadows)
        assert all(r["status_code"] == 200 for r in shadows)
        assert all(r["latency_ms"] >= 2000 for r in shadows)
        primaries = [r for r in deployment.records() if r["role"] == "champion"]
        assert len(primaries) == 50
        # The queue holds 4 jobs and each takes 2 s: most shadow copies were dropped, counted.
        stats = server.stats()
        assert stats["shadow"]["dropped"] > 0
        metrics = server.http.get(f"{server.admin_url}/metrics").text
        assert "konan_serving_shadow_dropped_total" in metrics
    finally:
        server.stop()


def test_an_erroring_shadow_is_logged_as_a_failed_shadow_only(
    tmp_path: Path, keys: KeyServer
) -> None:
    deployment = Deployment(tmp_path)
    champion = deployment.put(onnx_logistic(tmp_path))
    shadow = deployment.put(python_model(FAILING))
    traffic = Traffic(champion=1, shadow=2)
    deployment.write(
        spec([served(1, champion), served(2, shadow, flavor="python")], keys.url, traffic=traffic)
    )
    server = start(deployment)
    try:
        response = server.predict({"inputs": [{**ROW, "a": 500.0}]}, key=KEY)
        assert response.status_code == 200
        request_id = response.json()["request_id"]
        records = wait_for(
            lambda: (found := deployment.records_for(request_id)) and len(found) == 2 and found
        )
        by_role = {r["role"]: r for r in records}
        assert by_role["champion"]["status_code"] == 200
        assert by_role["shadow"]["status_code"] == 500
        assert by_role["shadow"]["error"].startswith("model_error: ValueError")
    finally:
        server.stop()


def test_a_model_error_is_500_without_internals_and_logged(tmp_path: Path, keys: KeyServer) -> None:
    deployment = Deployment(tmp_path)
    sha = deployment.put(python_model(FAILING))
    deployment.write(spec([served(1, sha, flavor="python")], keys.url))
    server = start(deployment)
    try:
        response = server.predict({"inputs": [{**ROW, "a": 500.0}]}, key=KEY)
        assert response.status_code == 500
        doc = response.json()
        assert doc["detail"] == "the model failed on this input"
        assert doc["code"] == "model_error"
        assert "secret" not in response.text
        assert "Traceback" not in response.text
        record = wait_for(lambda: deployment.records_for(doc["request_id"]))[0]
        assert record["status_code"] == 500
        assert record["error"].startswith("model_error: ValueError")
        # The model still serves other inputs.
        assert server.predict({"inputs": [ROW]}, key=KEY).status_code == 200
    finally:
        server.stop()
