"""movielens_evaluate@<model>: validation MSE and RMSE of one trained model."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from stages.common.cli import run_stage
from stages.common.io import load_keras, write_json
from stages.common.tracking import stage_run
from stages.movielens.models import inputs
from stages.movielens.paths import METRICS, MODEL, PREPARED


def evaluate(model, ratings: pd.DataFrame) -> dict[str, float]:
    valid = ratings[ratings["valid"]]
    predicted = model.predict(inputs(valid), batch_size=4096, verbose=0).reshape(-1)
    mse = float(np.mean((valid["rating"].to_numpy() - predicted) ** 2))
    return {"val_mse": mse, "val_rmse": mse**0.5, "n_valid": len(valid)}


def main(name: str) -> None:
    model_path = MODEL.format(name=name)
    metrics = evaluate(load_keras(model_path), pd.read_parquet(f"{PREPARED}/ratings.parquet"))
    write_json(METRICS.format(name=name), metrics)
    with stage_run(
        "movielens", f"movielens_evaluate@{name}", params={"model": name}, inputs=[PREPARED, model_path]
    ) as run:
        run.log_metrics(metrics)
        run.log_onto_training_run("movielens", model_path, metrics)
        run.offer_champion("movielens", model_path, ("val_mse", metrics["val_mse"]), False)
    print(f"{name}: val MSE {metrics['val_mse']:.4f}, RMSE {metrics['val_rmse']:.4f}")


if __name__ == "__main__":
    run_stage(main, sys.argv[1])
