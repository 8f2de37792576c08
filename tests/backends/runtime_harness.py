"""Helpers for the runtime tests: specs, an agent in a thread, HTTP calls, waiting, cleanup."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from konan.backends.runtimes.agent import Agent, AgentTuning
from konan.backends.runtimes.base import DesiredDeployment
from konan.backends.runtimes.processes import ProcessIdentity, find_processes, is_running
from konan.serving.spec import KeySource, ServedVersion, ServingSpec, Traffic

DOUBLE = Path(__file__).with_name("model_server_double.py")
DOUBLE_COMMAND = (sys.executable, str(DOUBLE))
AGENT_PROCESS = Path(__file__).with_name("runtime_agent_process.py")

# Production timings except where a test would otherwise wait for minutes.
FAST = AgentTuning(
    tick=0.5,
    probe_timeout=0.5,
    stop_grace=5.0,
    scale_down_after=1.0,
    backoff_initial=0.5,
    backoff_max=2.0,
    stable_after=2.0,
    startup_timeout=60.0,
    liveness_timeout=2.0,
    heartbeat_interval=0.5,
)

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def make_spec(revision: int = 1, deployment: str = "churn-live", champion: int = 1) -> ServingSpec:
    versions = [
        ServedVersion(
            version=v,
            model_version_id=100 + v,
            sha256=f"{v:064x}",
            flavor="sklearn",
            signature={"inputs": [], "outputs": []},
        )
        for v in sorted({champion, 1})
    ]
    return ServingSpec(
        deployment=deployment,
        deployment_id=1,
        revision=revision,
        versions=versions,
        traffic=Traffic(champion=champion),
        keys=KeySource(url="http://127.0.0.1:9/keys"),
    )


def make_desired(
    name: str = "churn-live",
    revision: int = 1,
    replicas_min: int = 1,
    replicas_max: int | None = None,
    env: dict[str, str] | None = None,
) -> DesiredDeployment:
    return DesiredDeployment(
        name=name,
        spec=make_spec(revision, deployment=name),
        replicas_min=replicas_min,
        replicas_max=replicas_min if replicas_max is None else replicas_max,
        env={"KONAN_SERVING_TOKEN": "test-serving-token", **(env or {})},
    )


@dataclass
class Response:
    status: int
    body: Any


def request(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 2.0,
) -> Response | None:
    """One HTTP call; None when the connection failed (refused, reset, timed out)."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        raw = json.dumps(body).encode() if body is not None else None
        conn.request(
            method,
            parts.path or "/",
            body=raw,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = data.decode(errors="replace")
    return Response(response.status, parsed)


def answers(url: str) -> bool:
    response = request(url, timeout=1.0)
    return response is not None and response.status == 200


class AgentThread:
    """An agent running in a thread of the test process; ``stop()`` stops every replica."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-agent")

    def _run(self) -> None:
        try:
            self.agent.run(self.stop_event)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> AgentThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent did not stop"
        if self.error is not None:
            raise self.error


def serving_processes(root: Path, name: str | None = None) -> list[ProcessIdentity]:
    """Model-server processes whose spec lives under ``root`` (optionally one deployment)."""
    folder = str(root / name) if name else str(root)

    def match(argv: tuple[str, ...]) -> bool:
        return any(
            argv[i] == "--spec" and argv[i + 1].startswith(folder + "/")
            for i in range(len(argv) - 1)
        )

    return find_processes(match)


def kill_everything_under(root: Path) -> list[int]:
    """Safety net after a test: SIGKILL any model server (or test agent) left under ``root``."""
    leftovers = serving_processes(root)
    leftovers += find_processes(lambda argv: str(AGENT_PROCESS) in argv and str(root) in argv)
    for ident in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ident.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(is_running(i) for i in leftovers) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [i.pid for i in leftovers]


@contextlib.contextmanager
def running_agent(agent: Agent) -> Iterator[AgentThread]:
    thread = AgentThread(agent).start()
    try:
        yield thread
    finally:
        thread.stop()


# ---- the real model server (python -m konan.serving), when it exists --------------------------

REAL_SERVER = importlib.util.find_spec("konan.serving.__main__") is not None
SERVING_TOKEN = "test-serving-token"
NUMERIC_SIGNATURE: dict[str, Any] = {
    "inputs": [{"name": n, "type": "float"} for n in ("a", "b", "c", "d")],
    "outputs": {"kind": "label", "type": "integer", "classes": [0, 1], "probabilities": True},
}
ROW = {"a": 0.5, "b": -1.25, "c": 2.0, "d": 0.0}


class KeyEndpoint:
    """The control plane's key endpoint as the real server calls it: POST → {"keys": [...]}."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("authorization") != f"Bearer {SERVING_TOKEN}":
                    status, doc = 401, {"detail": "bad serving token"}
                else:
                    status, doc = 200, {"keys": owner.keys}
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/keys"

    def add_key(self, secret: str) -> None:
        self.keys.append(
            {
                "id": len(self.keys) + 1,
                "prefix": secret[:7],
                "sha256": hashlib.sha256(secret.encode()).hexdigest(),
                "expires_at": None,
            }
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class RealServing:
    """What a real replica needs: an artifact store with an ONNX model, a key endpoint, a spool."""

    API_KEY = "kn_test_0123456789abcdef"

    def __init__(self, tmp: Path) -> None:
        from konan.backends.artifacts import LocalArtifactStore
        from tests.serving import model_builders as mb

        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.store = LocalArtifactStore(tmp / "artifacts")
        X, y = mb.numeric_data()
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression().fit(X, y)
        onnx = mb.write_onnx(model, tmp / "model.onnx").read_bytes()
        self.sha256 = self.store.put(io.BytesIO(onnx)).sha256
        self.keys = KeyEndpoint()
        self.keys.add_key(self.API_KEY)

    def spec(self, revision: int, deployment: str) -> ServingSpec:
        return ServingSpec(
            deployment=deployment,
            deployment_id=7,
            revision=revision,
            versions=[
                ServedVersion(
                    version=1,
                    model_version_id=101,
                    sha256=self.sha256,
                    flavor="onnx",
                    signature=NUMERIC_SIGNATURE,
                )
            ],
            traffic=Traffic(champion=1),
            keys=KeySource(url=self.keys.url, refresh_seconds=0.5),
        )

    def env(self) -> dict[str, str]:
        return {
            "KONAN_DATA_DIR": str(self.tmp / "data"),
            "KONAN_ARTIFACTS__URI": str(self.store.root),
            "KONAN_MONITORING__SPOOL_DIR": str(self.tmp / "spool"),
            "KONAN_SERVING_TOKEN": SERVING_TOKEN,
        }

    def desired(
        self,
        name: str = "churn-live",
        revision: int = 1,
        replicas_min: int = 1,
        replicas_max: int | None = None,
        env: dict[str, str] | None = None,
    ) -> DesiredDeployment:
        return DesiredDeployment(
            name=name,
            spec=self.spec(revision, name),
            replicas_min=replicas_min,
            replicas_max=replicas_min if replicas_max is None else replicas_max,
            env={**self.env(), **(env or {})},
        )

    def predict(self, endpoint: str) -> Response | None:
        return request(
            endpoint + "/predict",
            "POST",
            {"inputs": [ROW]},
            headers={"Authorization": f"Bearer {self.API_KEY}"},
        )

    def close(self) -> None:
        self.keys.close()
