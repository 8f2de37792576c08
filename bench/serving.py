"""Serving benchmark: Konan's model server against MLflow, BentoML and a bare FastAPI endpoint.

The same two scikit-learn models (make_classification 50k x 20, seed 42; LogisticRegression
and RandomForest(100 trees, depth 10)) are served by

- konan-onnx:    `python -m konan.serving`, the model registered as ONNX (skl2onnx, zipmap off),
- konan-sklearn: the same server with the model as a skops artifact (scikit-learn predicts),
- probe:         bench/peers/asgi_probe.py, issue 7's ceiling probe: a bare ASGI app on uvicorn
                 with a hashed key check, per-row feature checks, onnxruntime and an in-memory
                 log queue, and nothing else (what Konan's other features cost shows against it),
- bare:          bench/peers/bare_fastapi.py, FastAPI + uvicorn calling model.predict,
- mlflow-split:  `mlflow models serve --env-manager local` (one worker), `dataframe_split` body,
- mlflow-inputs: the same MLflow server, `{"inputs": [{feature: value, ...}, ...]}` body (the
                 same body as Konan's; a plain 2-D list is refused by MLflow's check against the
                 model's named-column signature),
- bentoml:       bench/peers/bentoml_service.py under `bentoml serve` (one worker),

each one worker process. MLflow and BentoML run from their own venvs (bench/.venvs/, created on
first use from bench/peers/requirements-*.txt); a peer that cannot be installed or started gets
a row saying why instead of figures.

Konan runs with everything on: API-key check (keys fetched from a small key endpoint in this
process), input validation against the signature, traffic policy, metrics and prediction
logging to the local spool. wrk (bench/lua/post.lua) runs in its own process; by default the
servers are pinned to CPU 0 and wrk to CPU 1 (taskset). Rounds alternate the systems
(A, B, C, A, B, C, ...); ratios to the bare endpoint are taken per round and their median
reported.

    .venv/bin/python bench/serving.py                       # the default run, ~8 minutes
    .venv/bin/python bench/serving.py --models lr --rows 1 --connections 16 --duration 3 --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from lib.common import (
    BENCH,
    ROOT,
    descendants,
    exit_on_sigterm,
    free_port,
    http_status,
    machine,
    median,
    pinned,
    post_json,
    run_wrk,
    stop_process,
    tree_kb,
    wait_for,
    write_results,
)
from lib.venvs import PeerUnavailable, ensure_venv

SERVING_TOKEN = "bench-serving-token"  # noqa: S105 - a throwaway token for a loopback server
SYSTEMS = (
    "konan-onnx",
    "konan-sklearn",
    "probe",
    "bare",
    "mlflow-split",
    "mlflow-inputs",
    "bentoml",
)
PEERS = {"mlflow-split": "mlflow", "mlflow-inputs": "mlflow", "bentoml": "bentoml"}
# The body each system takes: a list of {feature: value} objects under "inputs" (Konan, bare,
# BentoML, mlflow-inputs), or a pandas split frame (mlflow-split).
BODY_KIND = {"mlflow-split": "split"}
N_FEATURES = 20
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
SIGNATURE: dict[str, Any] = {
    "inputs": [{"name": n, "type": "float"} for n in FEATURES],
    "outputs": {"kind": "label", "type": "integer", "classes": [0, 1], "probabilities": True},
}


# ---- models ----------------------------------------------------------------------------------


def train(name: str, X: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if name == "lr":
        return LogisticRegression(max_iter=1000).fit(X, y)
    model = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=42, n_jobs=-1)
    model.fit(X, y)
    model.n_jobs = None  # predict on one core, like every server here
    return model


def to_onnx_bytes(model: Any) -> bytes:
    from skl2onnx import to_onnx

    sample = np.zeros((1, N_FEATURES), dtype=np.float32)
    onx = to_onnx(model, sample, options={"zipmap": False}, target_opset=18)
    data: bytes = onx.SerializeToString()
    return data


# ---- the key endpoint --------------------------------------------------------------------------


def start_key_server(secret: str) -> ThreadingHTTPServer:
    """Answers the KeySource POST with one key hash."""
    answer = orjson.dumps(
        {
            "keys": [
                {
                    "id": 1,
                    "prefix": secret[:7],
                    "sha256": hashlib.sha256(secret.encode()).hexdigest(),
                    "expires_at": None,
                }
            ]
        }
    )

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            ok = self.headers.get("authorization") == f"Bearer {SERVING_TOKEN}"
            payload = answer if ok else b'{"detail": "bad serving token"}'
            self.send_response(200 if ok else 401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ---- the log consumer stand-in ------------------------------------------------------------------


class SpoolDrain:
    """Stands in for the monitoring consumer: every 0.2 s it counts the records in sealed spool
    segments and deletes them, so the spool's 1 GiB budget never fills (a full spool makes the
    server answer 503, by design). It runs unpinned, in this process."""

    def __init__(self) -> None:
        self.dirs: dict[str, Path] = {}
        self.records: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, name: str, spool: Path) -> None:
        self.dirs[name] = spool
        self.records.setdefault(name, 0)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.drain("*.sealed")

    def drain(self, pattern: str) -> None:
        for name, spool in list(self.dirs.items()):
            for path in sorted(spool.glob(pattern)) if spool.exists() else []:
                if not path.name.endswith((".sealed", ".open")):
                    continue
                try:
                    data = path.read_bytes()
                    path.unlink()
                except OSError:
                    continue
                self.records[name] += sum(1 for line in data.split(b"\n") if line.strip())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.drain("*")  # what the servers flushed on SIGTERM (sealed and open segments)


# ---- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    system: str
    model: str
    proc: subprocess.Popen[bytes]
    pid: int
    url: str  # the predict URL
    auth: str | None
    log_dir: Path
    body_kind: str = "records"

    # Summed over the server's process tree: MLflow's CLI runs uvicorn as a child process, and
    # BentoML a supervisor and its worker; both count, as they would on a host.
    def rss_mb(self) -> float | None:
        kb = tree_kb(self.pid, "VmRSS")
        return kb / 1024 if kb else None

    def hwm_mb(self) -> float | None:
        kb = tree_kb(self.pid, "VmHWM")
        return kb / 1024 if kb else None

    def processes(self) -> int:
        return len(descendants(self.pid))


def start_konan(
    root: Path,
    model: str,
    flavor: str,
    artifact: bytes,
    keys_url: str,
    secret: str,
    cpus: str | None,
    trusted_types: list[str],
    *,
    deployment_id: int = 1,
    model_version_id: int = 1,
    env_extra: dict[str, str] | None = None,
    tag: str = "",
) -> Server:
    """A Konan model server; ``env_extra`` overrides its settings (e.g. a shared spool folder or
    scale-out mode with Redis, as the logging benchmark uses)."""
    from konan.backends.artifacts import LocalArtifactStore
    from konan.serving.spec import KeySource, ServedVersion, ServingSpec, Traffic

    system = "konan-onnx" if flavor == "onnx" else "konan-sklearn"
    home = root / f"{system}-{model}{tag}"
    home.mkdir(parents=True)
    store = LocalArtifactStore(root / "artifacts")
    sha = store.put(io.BytesIO(artifact)).sha256
    spec = ServingSpec(
        deployment=f"bench-{model}",
        deployment_id=deployment_id,
        revision=1,
        versions=[
            ServedVersion(
                version=1,
                model_version_id=model_version_id,
                sha256=sha,
                flavor=flavor,
                signature=SIGNATURE,
                trusted_types=trusted_types,
            )
        ],
        traffic=Traffic(champion=1),
        keys=KeySource(url=keys_url, refresh_seconds=2.0),
    )
    spec_path = home / "spec.json"
    spec.write(spec_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
    env.update(
        {
            "KONAN_DATA_DIR": str(home / "data"),
            "KONAN_ARTIFACTS__URI": str(store.root),
            "KONAN_MONITORING__SPOOL_DIR": str(home / "spool"),
            "KONAN_SERVING_TOKEN": SERVING_TOKEN,
            **(env_extra or {}),
        }
    )
    out_path, err_path = home / "server.out", home / "server.err"
    cmd = [
        sys.executable,
        "-m",
        "konan.serving",
        "--spec",
        str(spec_path),
        "--port",
        "0",
        "--admin-port",
        "0",
        "--log-level",
        "warning",
    ]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(pinned(cmd, cpus), env=env, stdout=out, stderr=err, cwd=ROOT)

    def announced() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise RuntimeError(f"{system} exited early:\n{err_path.read_text()}")
        for line in out_path.read_text().splitlines():
            if line.startswith("{"):
                doc: dict[str, Any] = orjson.loads(line)
                return doc
        return None

    doc = wait_for(announced, timeout=60)
    admin = f"http://{doc['admin']}"
    wait_for(lambda: http_status(f"{admin}/readyz") == 200, timeout=60)
    return Server(
        system=system,
        model=model,
        proc=proc,
        pid=int(doc["pid"]),
        url=f"http://{doc['public']}/predict",
        auth=f"Bearer {secret}",
        log_dir=home,
    )


def _start_local(
    system: str, model: str, root: Path, script: str, args: list[str], cpus: str | None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A baseline server from bench/peers/ in this venv (`--port` added); waits for /healthz and
    returns the process, its base URL and its folder."""
    home = root / f"{system}-{model}"
    home.mkdir(parents=True)
    port = free_port()
    cmd = [sys.executable, str(BENCH / "peers" / script), *args, "--port", str(port)]
    out_path, err_path = home / "server.out", home / "server.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(pinned(cmd, cpus), stdout=out, stderr=err, cwd=ROOT)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{system} exited early:\n{err_path.read_text()}")
        return http_status(f"http://127.0.0.1:{port}/healthz") == 200

    wait_for(up, timeout=60)
    return proc, f"http://127.0.0.1:{port}", home


def start_bare(root: Path, model: str, skops_path: Path, cpus: str | None) -> Server:
    args = ["--model", str(skops_path)]
    proc, base, home = _start_local("bare", model, root, "bare_fastapi.py", args, cpus)
    return Server("bare", model, proc, proc.pid, f"{base}/predict", None, home)


def start_probe(root: Path, model: str, onnx_path: Path, secret: str, cpus: str | None) -> Server:
    args = ["--model", str(onnx_path), "--features", str(N_FEATURES)]
    args += ["--key-sha256", hashlib.sha256(secret.encode()).hexdigest()]
    proc, base, home = _start_local("probe", model, root, "asgi_probe.py", args, cpus)
    return Server("probe", model, proc, proc.pid, f"{base}/predict", f"Bearer {secret}", home)


def _start_peer(
    system: str,
    model: str,
    home: Path,
    cmd: list[str],
    env: dict[str, str],
    health_url: str,
    predict_url: str,
    cpus: str | None,
    timeout: float = 120,
) -> Server:
    out_path, err_path = home / "server.out", home / "server.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        # its own session, so stopping it reaches the workers it spawns too
        proc = subprocess.Popen(
            pinned(cmd, cpus), env=env, stdout=out, stderr=err, cwd=ROOT, start_new_session=True
        )

    def up() -> bool:
        if proc.poll() is not None:
            tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise PeerUnavailable(f"{system} exited at start: " + " | ".join(tail))
        return http_status(health_url) == 200

    try:
        wait_for(up, timeout=timeout)
    except TimeoutError:
        stop_tree(proc)
        raise PeerUnavailable(
            f"{system} did not answer {health_url} within {timeout:g} s"
        ) from None
    return Server(system, model, proc, proc.pid, predict_url, None, home)


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a peer's process group (its workers too), then wait for the leader."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    stop_process(proc)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # a worker that outlived its parent


def peer_env(python: Path) -> dict[str, str]:
    """The bench's environment without Konan's settings or venv, the peer venv first on PATH
    (MLflow's CLI starts `uvicorn` by name)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KONAN_", "VIRTUAL_ENV")) and k != "PYTHONPATH"
    }
    env.update(
        {
            "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(python.parent.parent),
            "BENTOML_DO_NOT_TRACK": "true",
        }
    )
    return env


def start_mlflow(root: Path, model: str, skops_path: Path, cpus: str | None) -> Server:
    python = ensure_venv("mlflow")
    home = root / f"mlflow-{model}"
    home.mkdir(parents=True)
    env = peer_env(python)
    model_dir = home / "model"
    saved = subprocess.run(
        [
            str(python),
            str(BENCH / "peers" / "mlflow_save.py"),
            "--model",
            str(skops_path),
            "--out",
            str(model_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=home,
    )
    if saved.returncode != 0:
        tail = saved.stderr.strip().splitlines()[-3:]
        raise PeerUnavailable("mlflow.sklearn.save_model failed: " + " | ".join(tail))
    port = free_port()
    cmd = [
        str(python.parent / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    base = f"http://127.0.0.1:{port}"
    return _start_peer("mlflow", model, home, cmd, env, f"{base}/ping", f"{base}/invocations", cpus)


def start_bentoml(root: Path, model: str, skops_path: Path, cpus: str | None) -> Server:
    python = ensure_venv("bentoml")
    home = root / f"bentoml-{model}"
    home.mkdir(parents=True)
    env = peer_env(python)
    env.update({"BENCH_MODEL": str(skops_path), "BENTOML_HOME": str(home / "bentoml-home")})
    port = free_port()
    cmd = [
        str(python.parent / "bentoml"),
        "serve",
        "bentoml_service:Classifier",
        "--working-dir",
        str(BENCH / "peers"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}"
    return _start_peer("bentoml", model, home, cmd, env, f"{base}/readyz", f"{base}/predict", cpus)


# ---- the run ----------------------------------------------------------------------------------


def body_for(X: np.ndarray, rows: int, kind: str = "records") -> dict[str, Any]:
    values = [[float(v) for v in row] for row in X[:rows]]
    if kind == "split":
        return {"dataframe_split": {"columns": FEATURES, "data": values}}
    return {"inputs": [dict(zip(FEATURES, row, strict=True)) for row in values]}


def check_answers(servers: list[Server], X: np.ndarray, expected: list[int]) -> dict[str, str]:
    """Every server answers a 100-row request with 200 and the same labels as scikit-learn
    before it is measured. Konan and the bare endpoint must; a peer that does not is not
    measured, and the returned reason (by system) goes in the table."""
    failed: dict[str, str] = {}
    for s in servers:
        headers = {"authorization": s.auth} if s.auth else {}
        status, doc = post_json(s.url, body_for(X, len(expected), s.body_kind), headers)
        problem = None
        if status != 200:
            problem = f"answered {status} to the 100-row check: {str(doc)[:200]}"
        else:
            got = [int(p) for p in doc["predictions"]]
            agree = sum(a == b for a, b in zip(got, expected, strict=True)) / len(expected)
            print(f"  {s.system:14s} {s.model}: 200, labels agree with scikit-learn on {agree:.0%}")
            if agree < 1:
                problem = f"labels agree with scikit-learn on only {agree:.0%} of 100 rows"
        if problem is not None:
            if s.system not in PEERS:
                raise RuntimeError(f"{s.system}/{s.model}: {problem}")
            failed[s.system] = problem
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="lr,rf", help="lr,rf")
    parser.add_argument("--rows", default="1,100", help="rows per request")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server")
    parser.add_argument("--server-cpus", default="0", help="taskset list for servers ('' = none)")
    parser.add_argument("--wrk-cpus", default="1", help="taskset list for wrk ('' = none)")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    exit_on_sigterm()
    if shutil.which("wrk") is None:
        print("wrk not found (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    models = args.models.split(",")
    rows_list = [int(r) for r in args.rows.split(",")]
    conns_list = [int(c) for c in args.connections.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    server_cpus = args.server_cpus or None
    wrk_cpus = args.wrk_cpus or None

    import skops.io
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=50_000, n_features=N_FEATURES, random_state=42)
    root = Path(tempfile.mkdtemp(prefix="konan-bench-serving-"))
    secret = "kn_" + secrets.token_urlsafe(24)
    key_server = start_key_server(secret)
    keys_url = f"http://127.0.0.1:{key_server.server_address[1]}/keys"
    servers: dict[tuple[str, str], Server] = {}
    unavailable: dict[tuple[str, str], str] = {}  # (system, model) -> why it was not measured
    peer_procs: list[subprocess.Popen[bytes]] = []
    runs: list[dict[str, Any]] = []
    answered_2xx: dict[tuple[str, str], int] = {}
    drain = SpoolDrain()
    logging: dict[str, Any] = {}
    info = machine()
    try:
        for name in models:
            t0 = time.perf_counter()
            model = train(name, X, y)
            print(f"trained {name} in {time.perf_counter() - t0:.1f} s")
            skops_bytes = skops.io.dumps(model)
            skops_path = root / f"{name}.skops"
            skops_path.write_bytes(skops_bytes)
            trusted = list(skops.io.get_untrusted_types(data=skops_bytes))
            if "konan-onnx" in systems:
                servers["konan-onnx", name] = start_konan(
                    root, name, "onnx", to_onnx_bytes(model), keys_url, secret, server_cpus, []
                )
            if "konan-sklearn" in systems:
                servers["konan-sklearn", name] = start_konan(
                    root, name, "sklearn", skops_bytes, keys_url, secret, server_cpus, trusted
                )
            if "probe" in systems:
                onnx_path = root / f"{name}.onnx"
                onnx_path.write_bytes(to_onnx_bytes(model))
                servers["probe", name] = start_probe(root, name, onnx_path, secret, server_cpus)
            if "bare" in systems:
                servers["bare", name] = start_bare(root, name, skops_path, server_cpus)
            for peer, start in (("mlflow", start_mlflow), ("bentoml", start_bentoml)):
                wanted = [sys_ for sys_ in systems if PEERS.get(sys_) == peer]
                if not wanted:
                    continue
                try:
                    started = start(root, name, skops_path, server_cpus)
                except PeerUnavailable as exc:
                    print(f"  {peer} {name}: not measured: {exc}")
                    for sys_ in wanted:
                        unavailable[sys_, name] = str(exc)
                    continue
                peer_procs.append(started.proc)
                for sys_ in wanted:
                    servers[sys_, name] = dataclasses.replace(
                        started, system=sys_, body_kind=BODY_KIND.get(sys_, "records")
                    )
            for (system, m), s in servers.items():
                answered_2xx.setdefault((system, m), 1)  # the check request below
                if system.startswith("konan"):
                    drain.watch(f"{system}/{m}", s.log_dir / "spool")
            expected = [int(p) for p in model.predict(X[:100])]
            failed = check_answers([s for (_, m), s in servers.items() if m == name], X, expected)
            for sys_, reason in failed.items():
                unavailable[sys_, name] = reason
                del servers[sys_, name]

        bodies: dict[tuple[str, int], Path] = {}
        for kind in {s.body_kind for s in servers.values()}:
            for rows in rows_list:
                bodies[kind, rows] = root / f"body-{kind}-{rows}.json"
                bodies[kind, rows].write_bytes(orjson.dumps(body_for(X, rows, kind)))
        for (system, name), s in servers.items():  # warm up: caches, allocator, connections
            warm = run_wrk(
                s.url,
                bodies[s.body_kind, rows_list[0]],
                auth=s.auth,
                connections=conns_list[0],
                duration=args.warmup,
                cpus=wrk_cpus,
                threads=args.wrk_threads,
            )
            answered_2xx[system, name] += warm["requests"] - warm["non_2xx"]
        print(
            f"servers up in {root}; idle RSS: "
            + ", ".join(f"{k[0]}/{k[1]} {s.rss_mb():.0f} MB" for k, s in servers.items())
        )

        drain.start()
        total = args.rounds * len(rows_list) * len(conns_list) * len(servers)
        done = 0
        for rnd in range(1, args.rounds + 1):
            for name in models:
                for rows in rows_list:
                    for conns in conns_list:
                        for system in systems:
                            if (system, name) not in servers:
                                continue
                            s = servers[system, name]
                            result = run_wrk(
                                s.url,
                                bodies[s.body_kind, rows],
                                auth=s.auth,
                                connections=conns,
                                duration=args.duration,
                                cpus=wrk_cpus,
                                threads=args.wrk_threads,
                            )
                            result.pop("raw")
                            seconds = result["requests"] / result["rps"] if result["rps"] else 0
                            ok = result["requests"] - result["non_2xx"]
                            result["ok_rps"] = ok / seconds if seconds else 0.0
                            answered_2xx[system, name] += ok
                            result.update(
                                round=rnd,
                                system=system,
                                model=name,
                                rows=rows,
                                connections=conns,
                                rss_mb=s.rss_mb(),
                                hwm_mb=s.hwm_mb(),
                            )
                            if s.proc.poll() is not None:
                                raise RuntimeError(f"{system}/{name} died during the run")
                            runs.append(result)
                            done += 1
                            print(
                                f"[{done}/{total}] round {rnd} {name} {rows:>3} rows "
                                f"{conns:>2} conns {system:14s} {result['ok_rps']:9.0f} 2xx/s "
                                f"p50 {result['p50_ms']:7.2f} ms p99 {result['p99_ms']:7.2f} ms "
                                f"non-2xx {result['non_2xx']} sock {result['socket_errors']} "
                                f"RSS {result['rss_mb']:.0f} MB",
                                flush=True,
                            )
    finally:
        for s in servers.values():
            if s.proc not in peer_procs:
                stop_process(s.proc)
        for proc in peer_procs:
            stop_tree(proc)
        key_server.shutdown()
        if drain.dirs:
            drain.stop()
            logging = {
                k: {"answered_2xx": answered_2xx.get(tuple(k.split("/")), 0), "records": n}  # type: ignore[arg-type]
                for k, n in drain.records.items()
            }
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    summary = summarize(runs, systems, unavailable, rows_list, conns_list)
    print_table(summary, info, args)
    doc = {
        "benchmark": "serving",
        "machine": info,
        "config": vars(args),
        "logging": logging,
        "summary": summary,
        "unavailable": [
            {"system": k[0], "model": k[1], "reason": v} for k, v in unavailable.items()
        ],
        "runs": runs,
    }
    for k, v in logging.items():
        print(
            f"prediction records in the spool, {k}: {v['records']:,} for {v['answered_2xx']:,} "
            "2xx answers counted by wrk (wrk does not count answers in flight when it stops)"
        )
    path = write_results("serving", doc)
    print(f"\nJSON: {path.relative_to(ROOT)}")
    return 0


def summarize(
    runs: list[dict[str, Any]],
    systems: list[str],
    unavailable: dict[tuple[str, str], str],
    rows_list: list[int],
    conns_list: list[int],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    keys = {(r["model"], r["rows"], r["connections"]) for r in runs}
    keys |= {(m, r, c) for (_, m) in unavailable for r in rows_list for c in conns_list}
    for model, rows, conns in sorted(keys):
        same = [
            r for r in runs if (r["model"], r["rows"], r["connections"]) == (model, rows, conns)
        ]
        bare = {r["round"]: r for r in same if r["system"] == "bare"}
        for system in systems:
            mine = [r for r in same if r["system"] == system]
            if not mine:
                if (system, model) in unavailable:
                    out.append(
                        {
                            "model": model,
                            "rows": rows,
                            "connections": conns,
                            "system": system,
                            "not_measured": unavailable[system, model],
                        }
                    )
                continue
            ratios = [
                r["ok_rps"] / bare[r["round"]]["ok_rps"]
                for r in mine
                if r["round"] in bare and bare[r["round"]]["ok_rps"]
            ]
            rss = [r["rss_mb"] for r in mine if r["rss_mb"] is not None]
            out.append(
                {
                    "model": model,
                    "rows": rows,
                    "connections": conns,
                    "system": system,
                    "rounds": len(mine),
                    "rps": median([r["ok_rps"] for r in mine]),
                    "p50_ms": median([r["p50_ms"] for r in mine]),
                    "p99_ms": median([r["p99_ms"] for r in mine]),
                    "non_2xx": sum(r["non_2xx"] for r in mine),
                    "socket_errors": sum(r["socket_errors"] for r in mine),
                    "timeouts": sum(r["timeouts"] for r in mine),
                    "rss_mb": max(rss) if rss else None,
                    "ratio_to_bare": median(ratios) if ratios else None,
                }
            )
    return out


def print_table(
    summary: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"Serving: medians of {args.rounds} rounds, {args.duration:g} s wrk runs — "
            f"{info['cpus']} CPUs ({info['cpu_model']}), {info['date']}"
        )
    )
    for col in (
        "model",
        "rows",
        "conns",
        "system",
        "req/s",
        "x bare",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "sock err",
        "RSS MB",
    ):
        table.add_column(col, justify="left" if col in ("model", "system") else "right")
    for s in summary:
        if "not_measured" in s:
            table.add_row(
                s["model"],
                str(s["rows"]),
                str(s["connections"]),
                s["system"],
                "not measured",
                "",
                "",
                "",
                "",
                "",
                "",
            )
            continue
        ratio = s["ratio_to_bare"]
        table.add_row(
            s["model"],
            str(s["rows"]),
            str(s["connections"]),
            s["system"],
            f"{s['rps']:,.0f}",
            "—" if ratio is None else f"{ratio:.2f}",
            f"{s['p50_ms']:.2f}",
            f"{s['p99_ms']:.2f}",
            str(s["non_2xx"]),
            str(s["socket_errors"]),
            "—" if s["rss_mb"] is None else f"{s['rss_mb']:.0f}",
        )
    console = Console(width=140)
    console.print(table)
    reasons = {(s["system"], s["model"]): s["not_measured"] for s in summary if "not_measured" in s}
    for (system, model), reason in reasons.items():
        console.print(f"not measured: {system}/{model}: {reason}", markup=False)


if __name__ == "__main__":
    sys.exit(main())
