"""Run by bench/.venvs/mlflow's python: load the benchmark's fitted model (skops) and save it as
an MLflow model with `mlflow.sklearn.save_model`, with a signature inferred from 20 named float
columns (so MLflow's scoring server checks its inputs, as Konan does).

    bench/.venvs/mlflow/bin/python bench/peers/mlflow_save.py --model MODEL.skops --out DIR
"""

from __future__ import annotations

import argparse
import sys

import mlflow.sklearn
import numpy as np
import pandas as pd
import skops.io
from mlflow.models import infer_signature


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.model, "rb") as f:
        data = f.read()
    model = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    columns = [f"f{i}" for i in range(model.n_features_in_)]
    sample = pd.DataFrame(np.zeros((2, len(columns))), columns=columns)
    signature = infer_signature(sample, model.predict(sample.to_numpy()))
    # MLflow 3 saves scikit-learn models with skops by default and wants the types to trust
    # named (the tree storage of a random forest): the same list the other systems trust.
    trusted = skops.io.get_untrusted_types(data=data)
    mlflow.sklearn.save_model(model, args.out, signature=signature, skops_trusted_types=trusted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
