"""A model server's life: not ready until loaded, hot reload without a failed request, refusing
a revision it cannot verify, key revocation, log outages (F12) and a graceful SIGTERM (F01)."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from konan.serving.spec import Traffic
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

KEY = "kn_lifecycle_key_0000001"

SLOW_LOAD = """
import time
import numpy as np

class Model:
    classes_ = [0, 1]

    @classmethod
    def load(cls, model_dir):
        time.sleep(1.5)
        return cls()

    def predict(self, X):
        return (X["a"].to_numpy() > 0).astype(int)
"""

SLOW_PREDICT = """
import time
import numpy as np

class Model:
    def predict(self, X):
        time.sleep(0.5)
        return (X["a"].to_numpy() > 0).astype(int)
"""


@pytest.fixture
def keys() -> Iterator[KeyServer]:
    server = KeyServer().start()
    server.add(KEY)
    yield server
    server.stop()


def readyz(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    response = server.http.get(f"{server.admin_url}/readyz")
    return response.status_code, response.json()


def test_not_ready_until_models_are_loaded_and_keys_fetched(
    tmp_path: Path, keys: KeyServer
) -> None:
    keys.failing = True
    deployment = Deployment(tmp_path)
    sha = deployment.put(python_model(SLOW_LOAD))
    deployment.write(spec([served(1, sha, flavor="python")], keys.url))
    server = ServerProcess(deployment)
    try:
        status, doc = readyz(server)
        assert status == 503
        assert doc["reason"] == "loading"
        assert server.http.get(f"{server.url}/healthz").status_code == 200
        response = server.predict({"inputs": [ROW]}, key=KEY)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"

        wait_for(lambda: readyz(server)[1].get("reason") == "keys_unavailable", timeout=20)
        assert readyz(server)[0] == 503
        assert server.stats()["keys"]["error"]

        keys.failing = False
        server.wait_ready()
        assert server.predict({"inputs": [ROW]}, key=KEY).status_code == 200
    finally:
        server.stop()


def test_revoked_key_stops_working_within_five_seconds_and_outages_keep_the_last_set(
    tmp_path: Path, keys: KeyServer
) -> None:
    deployment = Deployment(tmp_path)
    sha = deployment.put(onnx_logistic(tmp_path))
    deployment.write(spec([served(1, sha)], keys.url))
    other = "kn_second_key_to_revoke_01"
    other_id = keys.add(other)
    server = ServerProcess(deployment)
    try:
        server.wait_ready()
        assert server.predict({"inputs": [ROW]}, key=other).status_code == 200

        # The control plane goes away: serving goes on with the keys it had.
        keys.failing = True
        wait_for(lambda: server.stats()["keys"]["error"] is not None)
        assert server.predict({"inputs": [ROW]}, key=other).status_code == 200
        assert server.ready()
        keys.failing = False

        keys.revoke(other_id)
        revoked_at = time.monotonic()
        wait_for(lambda: server.predict({"inputs": [ROW]}, key=other).status_code == 401, timeout=5)
        assert time.monotonic() - revoked_at <= 5
        assert server.predict({"inputs": [ROW]}, key=KEY).status_code == 200
    finally:
        server.stop()


def test_hot_reload_under_load_fails_no_request_and_refuses_unverifiable_revisions(
    tmp_path: Path, keys: KeyServer
) -> None:
    deployment = Deployment(tmp_path)
    first = deployment.put(onnx_logistic(tmp_path, c=1.0))
    second = deployment.put(onnx_logistic(tmp_path, c=0.01))
    versions = [served(1, first), served(2, second)]
    deployment.write(spec(versions, keys.url, revision=1))
    server = ServerProcess(deployment)
    server.wait_ready()

    failures: list[str] = []
    seen_versions: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx2.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    response = http.post(
                        f"{server.url}/predict",
                        json={"inputs": [ROW]},
                        headers={"authorization": f"Bearer {KEY}"},
                    )
                except httpx2.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    seen_versions.append(response.json()["model_version"])

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(seen_versions) > 50)
        # Promote version 2, then raise a canary of 1 on top of it: two swaps under load.
        deployment.write(spec(versions, keys.url, revision=2, traffic=Traffic(champion=2)))
        wait_for(lambda: server.stats()["revision"] == 2)
        mark = len(seen_versions)
        wait_for(lambda: len(seen_versions) > mark + 50)
        assert set(seen_versions[mark + 10 :]) == {2}

        # A revision naming an artifact the store does not have: refused, 2 keeps serving.
        missing = "0" * 64
        deployment.write(
            spec(
                [*versions, served(3, missing)],
                keys.url,
                revision=3,
                traffic=Traffic(champion=3),
            )
        )
        wait_for(lambda: (server.stats()["error"] or "").startswith("artifact_missing"))
        stats = server.stats()
        assert stats["revision"] == 2
        assert stats["ready"] is True
        status, doc = readyz(server)
        assert status == 200
        assert doc["revision"] == 2
        assert doc["error"].startswith("artifact_missing")

        # Bytes that do not hash to the spec's digest: refused as an integrity failure.
        tampered = deployment.put(b"some other bytes entirely")
        deployment.object_path(tampered).write_bytes(deployment.object_path(first).read_bytes())
        deployment.write(
            spec(
                [*versions, served(3, tampered)],
                keys.url,
                revision=4,
                traffic=Traffic(champion=3),
            )
        )
        wait_for(lambda: (server.stats()["error"] or "").startswith("artifact_integrity"))
        assert server.stats()["revision"] == 2
        mark = len(seen_versions)
        wait_for(lambda: len(seen_versions) > mark + 20)
        assert set(seen_versions[mark:]) == {2}
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        server.stop()
    assert failures == []


def test_sigterm_drains_in_flight_requests_logs_them_and_exits_zero(
    tmp_path: Path, keys: KeyServer
) -> None:
    deployment = Deployment(tmp_path)
    sha = deployment.put(python_model(SLOW_PREDICT))
    deployment.write(spec([served(1, sha, flavor="python")], keys.url))
    server = ServerProcess(deployment, "--drain-delay", "1")
    server.wait_ready()
    assert server.stats()["versions"][0]["offloaded"] is True

    def call(_: int) -> httpx2.Response:
        with httpx2.Client(timeout=30) as http:
            return http.post(
                f"{server.url}/predict",
                json={"inputs": [ROW]},
                headers={"authorization": f"Bearer {KEY}"},
            )

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(call, i) for i in range(4)]
        wait_for(lambda: server.stats()["in_flight"] >= 2)
        server.terminate(signal.SIGTERM)
        status, doc = readyz(server)  # still listening during the drain delay
        assert status == 503
        assert doc["reason"] == "draining"
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 4
    assert server.proc.wait(30) == 0
    logged = {r["request_id"] for r in deployment.records()}
    assert {r.json()["request_id"] for r in responses} <= logged
    server.http.close()


def test_log_outage_answers_503_never_a_200_with_a_dropped_record(
    tmp_path: Path, keys: KeyServer
) -> None:
    deployment = Deployment(tmp_path)
    sha = deployment.put(onnx_logistic(tmp_path))
    deployment.write(spec([served(1, sha)], keys.url))
    deployment.spool.write_text("not a folder: the log writer cannot spool")
    server = ServerProcess(deployment, "--log-queue", "8")
    try:
        server.wait_ready()
        answered = [server.predict({"inputs": [ROW]}, key=KEY) for _ in range(40)]
        statuses = [r.status_code for r in answered]
        assert set(statuses) == {200, 503}, statuses
        refused = [r for r in answered if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" for r in refused)
        assert all(r.json()["code"] == "log_unavailable" for r in refused)
        assert server.stats()["log"]["shed"] == len(refused)

        # The disk comes back: everything that was answered 200 reaches the log.
        deployment.spool.unlink()
        deployment.spool.mkdir()
        ok_ids = {r.json()["request_id"] for r in answered if r.status_code == 200}
        wait_for(lambda: ok_ids <= {r["request_id"] for r in deployment.records()}, timeout=30)
        refused_ids = {r.json()["request_id"] for r in refused}
        assert not refused_ids & {r["request_id"] for r in deployment.records()}
        assert server.predict({"inputs": [ROW]}, key=KEY).status_code == 200
    finally:
        server.stop()
        shutil.rmtree(deployment.spool, ignore_errors=True)
