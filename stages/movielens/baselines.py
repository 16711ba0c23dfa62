"""movielens_baselines: the validation MSE of predicting the global mean and each movie's mean."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages.common.cli import run_stage
from stages.common.io import write_json
from stages.common.tracking import stage_run
from stages.movielens.paths import BASELINES, PREPARED


def baselines(ratings: pd.DataFrame) -> dict[str, dict[str, float]]:
    train, valid = ratings[~ratings["valid"]], ratings[ratings["valid"]]
    global_mean = float(train["rating"].mean())
    movie_mean = train.groupby("movie")["rating"].mean()
    predictions = {
        "global_mean": np.full(len(valid), global_mean),
        # movies never rated in training fall back to the global mean
        "movie_mean": valid["movie"].map(movie_mean).fillna(global_mean).to_numpy(),
    }
    result = {}
    for name, pred in predictions.items():
        mse = float(np.mean((valid["rating"].to_numpy() - pred) ** 2))
        result[name] = {"val_mse": mse, "val_rmse": mse**0.5}
    return result


def main() -> None:
    result = baselines(pd.read_parquet(f"{PREPARED}/ratings.parquet"))
    write_json(BASELINES, result)
    for name, metrics in result.items():  # a row each, beside the models' and under their metric names
        tags = {"dvc.stage": "movielens_baselines"}
        with stage_run("movielens", f"movielens_baselines@{name}", inputs=[PREPARED], tags=tags) as run:
            run.log_metrics(metrics)
    print(", ".join(f"{n}: val MSE {m['val_mse']:.4f}" for n, m in result.items()))


if __name__ == "__main__":
    run_stage(main)
