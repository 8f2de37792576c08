"""A BentoML 1.4 service calling model.predict, one worker. Same request body as Konan
(`{"inputs": [{feature: value, ...}, ...]}`, checked by BentoML against the type hint) and the
same answer shape as the bare endpoint (`{"predictions": [...]}`).

    BENCH_MODEL=MODEL.skops bench/.venvs/bentoml/bin/bentoml serve \
        bench/peers/bentoml_service.py:Classifier --host 127.0.0.1 --port 3000
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
import skops.io


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        with open(os.environ["BENCH_MODEL"], "rb") as f:
            data = f.read()
        self.model = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
        self.features = [f"f{i}" for i in range(self.model.n_features_in_)]

    @bentoml.api
    def predict(self, inputs: list[dict[str, float]]) -> dict[str, Any]:
        X = np.array([[row[f] for f in self.features] for row in inputs], dtype=np.float64)
        return {"predictions": self.model.predict(X).tolist()}
