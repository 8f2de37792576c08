"""The ceiling probe of issue 7: how far Python goes here with the minimum a secured endpoint does.

A bare ASGI app on uvicorn (uvloop, httptools): checks a hashed API key, validates the named
numeric features of every row, runs the ONNX model through onnxruntime and puts a log record on
an in-memory queue (a thread takes it off and throws it away: no spool, no Redis). No metrics,
no traffic policy, no request ids, no readiness; not a server anyone should run. Konan's model
server is measured against it to show what its features cost.

    python bench/peers/asgi_probe.py --model MODEL.onnx --key-sha256 HEX --features 20 --port 8000
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import queue
import threading
from operator import itemgetter
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn

_NUMBER = (int, float)


def build_app(model_path: str, key_sha256: str, n_features: int) -> Any:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    digest = bytes.fromhex(key_sha256)
    row_values = itemgetter(*[f"f{i}" for i in range(n_features)])
    logs: queue.Queue[bytes] = queue.Queue(maxsize=10_000)

    def discard() -> None:
        while True:
            logs.get()

    threading.Thread(target=discard, daemon=True).start()

    async def answer(send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await answer(send, 200, b'{"status":"ok"}')
            return
        auth = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(hashlib.sha256(auth[7:]).digest(), digest):
            await answer(send, 401, b'{"detail":"bad key"}')
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            rows = orjson.loads(body)["inputs"]
            values = [row_values(row) for row in rows]
            if any(type(v) not in _NUMBER for row in values for v in row):
                raise ValueError("not a number")
        except (ValueError, KeyError, TypeError):
            await answer(send, 422, b'{"detail":"invalid input"}')
            return
        labels = session.run(["label"], {input_name: np.array(values, dtype=np.float32)})[0]
        out = orjson.dumps({"predictions": labels}, option=orjson.OPT_SERIALIZE_NUMPY)
        logs.put_nowait(orjson.dumps({"inputs": rows, "outputs": out.decode()}))
        await answer(send, 200, out)

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--key-sha256", required=True)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = build_app(args.model, args.key_sha256, args.features)
    print(json.dumps({"event": "listening", "pid": os.getpid()}), flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
