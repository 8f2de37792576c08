"""What the model-server tests run against: a real `python -m konan.serving` process, a local
artifact store holding models built in the test, a spool folder for the prediction log, and a
small real HTTP key endpoint (stdlib http.server in a thread) that a test can revoke keys on."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import orjson

from konan.backends.artifacts import LocalArtifactStore
from konan.serving.spec import KeySource, ServedVersion, ServingSpec, Traffic
from tests.serving import model_builders as mb

TOKEN = "serving-token-for-tests"
NUMERIC_SIGNATURE: dict[str, Any] = {
    "inputs": [{"name": n, "type": "float"} for n in mb.NUMERIC],
    "outputs": {"kind": "label", "type": "integer", "classes": [0, 1], "probabilities": True},
}
CHURN_SIGNATURE: dict[str, Any] = {
    "inputs": [
        {"name": "tenure", "type": "float"},
        {"name": "spend", "type": "float"},
        {"name": "plan", "type": "string", "categories": ["basic", "pro", "team"]},
    ],
    "outputs": {"kind": "label", "type": "integer", "classes": [0, 1], "probabilities": True},
}
ROW = {"a": 0.5, "b": -1.25, "c": 2.0, "d": 0.0}

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], *, timeout: float = 15.0, interval: float = 0.05
) -> T:
    """Poll until `condition()` is truthy and return it; fail with a clear message at the
    deadline (no sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


# ---- models and specs ----------------------------------------------------------------------------


def python_model(source: str) -> bytes:
    """A custom-model bundle whose entrypoint is `model:Model`."""
    manifest = {"entrypoint": "model:Model", "files": ["model.py"]}
    return mb.zip_bytes({"konan-model.json": json.dumps(manifest), "model.py": source})


def onnx_logistic(tmp: Path, *, c: float = 1.0) -> bytes:
    from sklearn.linear_model import LogisticRegression

    X, y = mb.numeric_data()
    model = LogisticRegression(C=c).fit(X, y)
    return mb.write_onnx(model, tmp / f"lr-{c}.onnx").read_bytes()


def served(
    version: int,
    sha256: str,
    *,
    flavor: str = "onnx",
    signature: dict[str, Any] | None = None,
    trusted_types: list[str] | None = None,
) -> ServedVersion:
    return ServedVersion(
        version=version,
        model_version_id=100 + version,
        sha256=sha256,
        flavor=flavor,
        signature=signature or NUMERIC_SIGNATURE,
        trusted_types=trusted_types or [],
    )


def spec(
    versions: list[ServedVersion],
    keys_url: str,
    *,
    revision: int = 1,
    traffic: Traffic | None = None,
    max_batch_rows: int = 1000,
    unseen_category: str = "reject",
    deployment: str = "churn-live",
) -> ServingSpec:
    return ServingSpec.model_validate(
        {
            "deployment": deployment,
            "deployment_id": 7,
            "revision": revision,
            "versions": [v.model_dump() for v in versions],
            "traffic": (traffic or Traffic(champion=versions[0].version)).model_dump(),
            "keys": KeySource(url=keys_url, refresh_seconds=0.5).model_dump(),
            "max_batch_rows": max_batch_rows,
            "unseen_category": unseen_category,
        }
    )


# ---- the key endpoint ------------------------------------------------------------


@dataclass
class KeyServer:
    """POST /keys with the serving token -> {"keys": [...]}; records what replicas report."""

    keys: dict[int, dict[str, Any]] = field(default_factory=dict)
    failing: bool = False
    used_reports: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    _next_id: int = 1
    _server: ThreadingHTTPServer | None = None

    def add(
        self,
        secret: str,
        *,
        expires_at: float | None = None,
        rate: tuple[int, float] | None = None,
    ) -> int:
        key_id = self._next_id
        self._next_id += 1
        self.keys[key_id] = {
            "id": key_id,
            "prefix": secret[:7],
            "sha256": hashlib.sha256(secret.encode()).hexdigest(),
            "expires_at": expires_at,
            "rate": None if rate is None else {"amount": rate[0], "seconds": rate[1]},
        }
        return key_id

    def revoke(self, key_id: int) -> None:
        self.keys.pop(key_id, None)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/keys"

    def start(self) -> KeyServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                owner.calls += 1
                if self.headers.get("authorization") != f"Bearer {TOKEN}":
                    self._answer(401, {"detail": "bad serving token"})
                    return
                if owner.failing:
                    self._answer(503, {"detail": "control plane down"})
                    return
                owner.used_reports.append(json.loads(body))
                self._answer(200, {"keys": list(owner.keys.values())})

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# ---- the model server process --------------------------------------------------


class Deployment:
    """A folder with an artifact store, a spec file, a spool and a data dir for one server."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.store = LocalArtifactStore(root / "artifacts")
        self.spec_path = root / "spec.json"
        self.spool = root / "spool"
        self.data_dir = root / "data"

    def put(self, data: bytes) -> str:
        return self.store.put(io.BytesIO(data)).sha256

    def object_path(self, sha256: str) -> Path:
        return self.store.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def write(self, serving_spec: ServingSpec) -> None:
        serving_spec.write(self.spec_path)

    def records(self) -> list[dict[str, Any]]:
        """Every prediction record the server wrote so far (open and sealed segments)."""
        while True:
            try:
                out: list[dict[str, Any]] = []
                for path in sorted(self.spool.glob("*")):
                    if not path.name.endswith((".open", ".sealed")):
                        continue
                    for line in path.read_bytes().splitlines():
                        try:
                            out.append(orjson.loads(line))
                        except orjson.JSONDecodeError:
                            continue
                return out
            except FileNotFoundError:  # a segment was sealed (renamed) while we read
                continue

    def records_for(self, request_id: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["request_id"] == request_id]


class ServerProcess:
    """`python -m konan.serving` on free ports: `--port 0 --admin-port 0`, or with
    `admin=False` no admin port (the public one listens at once and answers everything)."""

    def __init__(self, deployment: Deployment, *extra_args: str, admin: bool = True) -> None:
        self.deployment = deployment
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
        env.update(
            {
                "KONAN_DATA_DIR": str(deployment.data_dir),
                "KONAN_ARTIFACTS__URI": str(deployment.store.root),
                "KONAN_MONITORING__SPOOL_DIR": str(deployment.spool),
                "KONAN_SERVING_TOKEN": TOKEN,
            }
        )
        self.stdout_path = deployment.root / f"server-{time.monotonic_ns()}.out"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "konan.serving",
                    "--spec",
                    str(deployment.spec_path),
                    "--port",
                    "0",
                    *(("--admin-port", "0") if admin else ()),
                    *extra_args,
                ],
                env=env,
                stdout=out,
                stderr=err,
            )
        announcement = wait_for(self._announcement, timeout=30)
        self.url = f"http://{announcement['public']}"
        self.port = int(announcement["public"].rsplit(":", 1)[1])
        self.admin_url = f"http://{announcement['admin']}" if admin else self.url
        self.http = httpx2.Client(timeout=30)

    def _announcement(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited early:\n{self.stderr()}")
        for line in self.stdout_path.read_text().splitlines():
            if line.startswith("{"):
                doc: dict[str, Any] = json.loads(line)
                return doc
        return None

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.http.get(f"{self.admin_url}/stats").json()
        return doc

    def ready(self) -> bool:
        return self.http.get(f"{self.admin_url}/readyz").status_code == 200

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_for(self.ready, timeout=timeout)

    def predict(
        self,
        body: Any,
        *,
        key: str | None,
        headers: dict[str, str] | None = None,
        path: str = "/predict",
        raw: bytes | None = None,
    ) -> httpx2.Response:
        sent = {"content-type": "application/json", **(headers or {})}
        if key is not None:
            sent["authorization"] = f"Bearer {key}"
        content = raw if raw is not None else orjson.dumps(body)
        return self.http.post(f"{self.url}{path}", content=content, headers=sent)

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> int:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def running(deployment: Deployment, *extra_args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(deployment, *extra_args)
    try:
        yield server
    finally:
        server.stop()
