"""The baseline: a bare FastAPI + uvicorn endpoint calling model.predict on a numpy matrix.

No key check, no validation beyond what numpy does, no logging: what a hand-written endpoint
costs. Same request body as Konan (`{"inputs": [{feature: value, ...}, ...]}`).

    python bench/peers/bare_fastapi.py --model MODEL.skops --port 8000
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import skops.io
import uvicorn
from fastapi import FastAPI, Request


def build_app(model_path: str) -> FastAPI:
    with open(model_path, "rb") as f:
        data = f.read()
    model = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    features = [f"f{i}" for i in range(model.n_features_in_)]
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, list[int]]:
        body = await request.json()
        X = np.array([[row[f] for f in features] for row in body["inputs"]], dtype=np.float64)
        return {"predictions": model.predict(X).tolist()}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = build_app(args.model)
    print(json.dumps({"event": "listening", "pid": os.getpid()}), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    sys.exit(main())
