"""movielens_train@<model>: fit one model from params.yaml movielens.models.<model>."""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from stages.common.cli import run_stage
from stages.common.distribution import strategy
from stages.common.params import pick_model
from stages.common.training import LearningRateSchedule, resume_callbacks, save_training_outputs, seed_everything
from stages.movielens import params as movielens_params
from stages.movielens import paths
from stages.movielens.models import BUILDERS, inputs
from stages.movielens.params import ModelParams
from stages.movielens.paths import PREPARED


def build(p: ModelParams, n_users: int, n_movies: int, training: bool = False):
    """The model; `training` with sparse_updates: with embeddings that read only the rows they look up."""
    kwargs = {"factors": p.factors, "l2": p.l2, "lookup_l2": p.lookup_l2, "rating_range": p.rating_range}
    if training and p.sparse_updates:
        from stages.common.sparse_embeddings import RowLookupEmbedding

        kwargs["embedding_layer"] = RowLookupEmbedding
    if p.kind == "nn":
        kwargs.update(hidden=p.hidden, dropout_embeddings=p.dropout_embeddings, dropout_hidden=p.dropout_hidden)
    return BUILDERS[p.kind](n_users, n_movies, **kwargs)


def optimizer(p: ModelParams, learning_rate: float):
    import keras

    if p.sparse_updates:
        from stages.common.sparse_embeddings import LazyAdam

        return LazyAdam(learning_rate)
    return keras.optimizers.Adam(learning_rate)


def train(ratings: pd.DataFrame, n_users: int, n_movies: int, p: ModelParams, extra_callbacks=()):
    """Pure step: (trained model with the best validation weights, history dict, ratings/s)."""
    import keras

    seed_everything(p.seed)
    schedule = LearningRateSchedule(p.lr_schedule)
    with strategy(p.distribution).scope():  # variables and optimizer state live on the strategy's devices
        model = build(p, n_users, n_movies, training=True)
        model.compile(optimizer=optimizer(p, schedule.rate(0)), loss="mse", metrics=["mse"])
    callbacks = [schedule.callback(), *extra_callbacks]
    if p.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping("val_mse", patience=p.early_stopping_patience, restore_best_weights=True)
        )
    train_rows, valid_rows = ratings[~ratings["valid"]], ratings[ratings["valid"]]
    started = time.perf_counter()
    history = model.fit(
        inputs(train_rows),
        train_rows["rating"].to_numpy("float32"),
        batch_size=p.batch_size,
        epochs=p.epochs,
        validation_data=(inputs(valid_rows), valid_rows["rating"].to_numpy("float32")),
        callbacks=callbacks,
        verbose=2,
    )
    seconds = time.perf_counter() - started
    if p.sparse_updates:  # its weights in Keras' own layers and Adam (fresh), so the model loads without this project
        trained, model = model, build(p, n_users, n_movies)
        model.set_weights(trained.get_weights())
        model.compile(optimizer=keras.optimizers.Adam(schedule.rate(0)), loss="mse", metrics=["mse"])
        model.optimizer.build(model.trainable_variables)  # its variables saved, so loading warns of no mismatch
    epochs_run = len(history.history["loss"])
    return model, history.history, len(train_rows) * epochs_run / seconds


def main(name: str) -> None:
    from stages.common.resume import dvc_hashes
    from stages.common.tracking import stage_run

    p = movielens_params.load()
    mp = pick_model(p.models, name, "movielens.models")
    ratings = pd.read_parquet(f"{PREPARED}/ratings.parquet")
    n_users = len(pd.read_parquet(f"{PREPARED}/users.parquet"))
    n_movies = len(pd.read_parquet(f"{PREPARED}/movies.parquet"))
    with stage_run(
        "movielens", f"movielens_train@{name}", params={"model": name, **mp.model_dump()}, inputs=[PREPARED]
    ) as run:
        data_hashes = dvc_hashes([PREPARED])  # read dvc.lock once: the dataset digest and the backup key
        run.log_dataset(ratings[~ratings["valid"]], "movielens-train", PREPARED, data_hashes[PREPARED])
        backup = resume_callbacks(f"movielens_train@{name}", {"params": mp.model_dump(), "data": data_hashes})
        model, history, throughput = train(
            ratings, n_users, n_movies, mp, extra_callbacks=[run.keras_callback(), *backup]
        )
        best = int(np.argmin(history["val_mse"]))
        summary = {
            "best_epoch": best + 1,
            "best_val_mse": float(history["val_mse"][best]),
            "train_ratings_per_s": throughput,
        }
        save_training_outputs(
            run, paths, name, model, history, summary, f"MovieLens {name}: MSE per epoch", ["mse", "val_mse"]
        )
    print(f"{name}: best val MSE {summary['best_val_mse']:.4f} at epoch {best + 1}, {throughput:,.0f} ratings/s")


if __name__ == "__main__":
    run_stage(main, sys.argv[1])
