"""A model server's life: not ready (and not listening on the public port) until loaded, hot
reload without a failed request, refusing a revision it cannot verify, key revocation, log
outages (F12), joining a shared port only once ready (F02) and a graceful SIGTERM (F01)."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
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


PREDICT_BODY = json.dumps({"inputs": [ROW]}).encode()
PREDICT_HEADERS = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}


def accepts(port: int) -> bool:
    """Whether a TCP connection to the public port is accepted (something listens)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


def fresh_connection_predict(port: int) -> int:
    """One prediction on a new connection (so the kernel picks a listener); 0 if it failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/predict", body=PREDICT_BODY, headers=PREDICT_HEADERS)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def raw_predict(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Send one prediction on an open socket and read the answer until the server closes."""
    head = (
        "POST /predict HTTP/1.1\r\nHost: replica\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {len(PREDICT_BODY)}\r\n\r\n"
    )
    sock.sendall(head.encode() + PREDICT_BODY)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data, "the server closed the connection without an answer"
    header_block, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, body


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
        assert server.http.get(f"{server.admin_url}/healthz").status_code == 200
        # The public port is bound but does not listen until the replica is ready (F02).
        assert not accepts(server.port)

        wait_for(lambda: readyz(server)[1].get("reason") == "keys_unavailable", timeout=20)
        assert readyz(server)[0] == 503
        assert server.stats()["keys"]["error"]
        assert not accepts(server.port)

        keys.failing = False
        server.wait_ready()
        assert server.http.get(f"{server.url}/healthz").status_code == 200
        assert server.predict({"inputs": [ROW]}, key=KEY).status_code == 200
    finally:
        server.stop()


def test_without_an_admin_port_the_public_port_listens_at_once_and_answers_503_until_ready(
    tmp_path: Path, keys: KeyServer
) -> None:
    deployment = Deployment(tmp_path)
    sha = deployment.put(python_model(SLOW_LOAD))
    deployment.write(spec([served(1, sha, flavor="python")], keys.url))
    server = ServerProcess(deployment, admin=False)
    try:
        assert server.http.get(f"{server.url}/healthz").status_code == 200
        response = server.http.get(f"{server.url}/readyz")
        assert response.status_code == 503
        assert response.json()["reason"] == "loading"
        response = server.predict({"inputs": [ROW]}, key=KEY)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["code"] == "dependency_unavailable"

        server.wait_ready()
        assert server.predict({"inputs": [ROW]}, key=KEY).status_code == 200
    finally:
        server.stop()


def test_a_replica_joining_a_shared_port_gets_no_connection_before_it_is_ready(
    tmp_path: Path, keys: KeyServer
) -> None:
    """F02: replicas share the public port through SO_REUSEPORT; one that is still loading must
    not be handed connections it can only answer with 503."""
    first = Deployment(tmp_path / "first")
    fast = first.put(onnx_logistic(tmp_path))
    first.write(spec([served(1, fast)], keys.url))
    second = Deployment(tmp_path / "second")
    slow = second.put(python_model(SLOW_LOAD))
    second.write(spec([served(1, slow, flavor="python")], keys.url))

    serving = ServerProcess(first, "--reuse-port")
    joining: ServerProcess | None = None
    statuses: list[int] = []
    try:
        serving.wait_ready()
        joining = ServerProcess(second, "--port", str(serving.port), "--reuse-port")
        assert joining.port == serving.port

        def loading() -> bool:
            assert joining is not None
            return readyz(joining)[1].get("reason") == "loading"

        while loading():  # about 1.5 s: new connections, so the kernel picks a listener each
            statuses.append(fresh_connection_predict(serving.port))
        joining.wait_ready()
        assert len(statuses) >= 10
        assert set(statuses) == {200}, statuses

        # Once ready it listens, and takes its share.
        after = [fresh_connection_predict(serving.port) for _ in range(60)]
        assert set(after) == {200}
        assert joining.stats()["requests_total"] > 0
    finally:
        if joining is not None:
            joining.stop()
        serving.stop()


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


def test_sigterm_closes_the_listeners_and_serves_connections_already_accepted(
    tmp_path: Path, keys: KeyServer
) -> None:
    """F01: uvicorn alone closes, on shutdown, every connection with no request in progress,
    including those it just accepted whose request is on its way (a broken pipe for the
    client). Here the listeners close first, and accepted connections may still send one
    request, answered with `Connection: close`."""
    deployment = Deployment(tmp_path)
    sha = deployment.put(onnx_logistic(tmp_path))
    deployment.write(spec([served(1, sha)], keys.url))
    server = ServerProcess(deployment, "--accept-grace", "3")
    server.wait_ready()

    pooled = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    pooled.request("POST", "/predict", body=PREDICT_BODY, headers=PREDICT_HEADERS)
    first = pooled.getresponse()
    first.read()
    assert first.status == 200
    assert first.getheader("connection") is None  # kept alive: it is idle when SIGTERM comes

    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(4)]
    # Accept queues are FIFO: once a later connection is answered, these were accepted.
    assert fresh_connection_predict(server.port) == 200

    server.terminate(signal.SIGTERM)
    wait_for(lambda: not accepts(server.port), timeout=5)  # the listener is gone

    request_ids: list[str] = []
    for sock in silent[:3]:
        status, headers, body = raw_predict(sock)
        assert status == 200
        assert headers.get("connection") == "close"
        request_ids.append(json.loads(body)["request_id"])
    pooled.request("POST", "/predict", body=PREDICT_BODY, headers=PREDICT_HEADERS)
    last = pooled.getresponse()
    request_ids.append(json.loads(last.read())["request_id"])
    assert last.status == 200
    assert last.getheader("connection") == "close"
    pooled.close()

    # One connection never sends: it is closed when the grace ends, and the server exits 0.
    assert silent[3].recv(1) == b""
    for sock in silent:
        sock.close()
    assert server.proc.wait(30) == 0
    server.http.close()
    assert set(request_ids) <= {r["request_id"] for r in deployment.records()}


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
