"""The model server's predict path in process, without HTTP: µs per call through `ServingApp`.

Builds a real `Replica` (the benchmark's ONNX or skops model in a local artifact store, keys from
a small key endpoint, prediction logging to a spool folder) and calls `ServingApp.head` and
`finish` directly with a fixed request, as `konan.serving.http` does, so the figure is Konan's
own work per request (key check, parse, validation, traffic policy, model call, response, log
record) without the HTTP layer or the socket. The producer
thread that writes the spool runs as it does in a server; its CPU time is reported too.

    .venv/bin/python bench/predict_path.py                        # LR, ONNX, 1 row
    .venv/bin/python bench/predict_path.py --model rf --rows 100
    .venv/bin/python bench/predict_path.py --profile              # cProfile's top functions

Timed with the process CPU clock (time.process_time: all threads), so the figure does not depend
much on what else the machine is doing; the best of --repeat rounds is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from sklearn.datasets import make_classification

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as bs  # bench/ is not a package: its folder goes on sys.path first


def build(root: Path, model_name: str, flavor: str, keys_url: str) -> Any:
    from konan.backends.artifacts import LocalArtifactStore
    from konan.core.settings import ServingSettings, load_settings
    from konan.serving.server import Options, Replica, ServingApp
    from konan.serving.spec import KeySource, ServedVersion, ServingSpec, Traffic

    X, y = make_classification(n_samples=50_000, n_features=20, random_state=42)
    model = bs.train(model_name, X, y)
    if flavor == "onnx":
        artifact, trusted = bs.to_onnx_bytes(model), []
    else:
        import skops.io

        artifact = skops.io.dumps(model)
        trusted = skops.io.get_untrusted_types(data=artifact)
    store = LocalArtifactStore(root / "artifacts")
    sha = store.put(io.BytesIO(artifact)).sha256
    spec = ServingSpec(
        deployment="bench",
        deployment_id=1,
        revision=1,
        versions=[
            ServedVersion(
                version=1,
                model_version_id=1,
                sha256=sha,
                flavor=flavor,
                signature=bs.SIGNATURE,
                trusted_types=trusted,
            )
        ],
        traffic=Traffic(champion=1),
        keys=KeySource(url=keys_url, refresh_seconds=60.0),
    )
    spec_path = root / "spec.json"
    spec.write(spec_path)
    for name in [k for k in os.environ if k.startswith("KONAN_")]:
        del os.environ[name]
    os.environ.update(
        {
            "KONAN_DATA_DIR": str(root / "data"),
            "KONAN_ARTIFACTS__URI": str(store.root),
            "KONAN_MONITORING__SPOOL_DIR": str(root / "spool"),
            "KONAN_SERVING_TOKEN": bs.SERVING_TOKEN,
        }
    )
    settings = load_settings(ServingSettings)
    replica = Replica(spec_path, spec, settings, Options(spec=spec_path))
    replica.start()
    deadline = time.monotonic() + 60
    while not replica.can_serve():
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not become ready in 60 s")
        time.sleep(0.05)
    return ServingApp(replica), replica, X


def run(app: Any, body: bytes, secret: str, calls: int) -> int:
    from konan.serving.http import RequestHead, Response

    head = RequestHead(
        "POST",
        "/predict",
        b"",
        [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {secret}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        None,
    )
    bad = 0
    last: Any = None
    loop = asyncio.new_event_loop()
    for _ in range(calls):
        ticket = app.head(head)
        answer = ticket if isinstance(ticket, Response) else app.finish(ticket, body)
        if not isinstance(answer, Response):  # a slow call moved the model to a worker thread
            answer = loop.run_until_complete(answer)
        if answer.status != 200:
            bad += 1
            last = answer
    loop.close()
    if bad:
        raise RuntimeError(f"{bad} answers were not 200, e.g. {last.status} {last.body[:300]!r}")
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["lr", "rf"], default="lr")
    parser.add_argument("--flavor", choices=["onnx", "sklearn"], default="onnx")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="konan-predict-path-"))
    secret = "kn_predict_path_secret_000000001"  # noqa: S105 (a throw-away key for one run)
    keys = bs.start_key_server(secret)
    try:
        app, replica, X = build(
            root, args.model, args.flavor, f"http://127.0.0.1:{keys.server_address[1]}/keys"
        )
        body = orjson.dumps(bs.body_for(X, args.rows))
        run(app, body, secret, 2_000)  # warm-up
        replica.producer.flush()
        best = float("inf")
        for _ in range(args.repeat):
            cpu = time.process_time()
            wall = time.perf_counter()
            done = run(app, body, secret, args.calls)
            replica.producer.flush()
            cpu = time.process_time() - cpu
            wall = time.perf_counter() - wall
            best = min(best, cpu / done)
            print(f"{done} calls: {cpu / done * 1e6:6.1f} µs CPU, {wall / done * 1e6:6.1f} µs wall")
        print(
            f"{args.model} {args.flavor}, {args.rows} row(s): best {best * 1e6:.1f} µs CPU per "
            "predict call (app + log producer thread, no HTTP)"
        )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            run(app, body, secret, args.calls)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        replica.close()
    finally:
        keys.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
