"""MovieLens benchmark on the real data: quality over 3 seeds, throughput vs a plain Keras script, chain wall time.

    LESSON5_MIRROR=../shared/data python -m benchmarks.movielens [--seeds 1 2 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.common import ProjectCopy, mean_spread, require_mirror, throwaway_mlflow_store
from stages.common.download import TrustRecord, fetch_and_extract
from stages.movielens import baselines, data, prepare, train
from stages.movielens import params as movielens_params


def load_real(p) -> tuple:
    raw = tempfile.mkdtemp(prefix="movielens-raw-")
    fetch_and_extract(p.sources[p.dataset], raw, TrustRecord("movielens"), members=data.archive_members(p.dataset))
    return data.read_ratings(raw, p.dataset), data.read_movies(raw, p.dataset)


def quality(p, ratings, movies, seeds: list[int]) -> None:
    results: dict[str, list[float]] = {}
    for seed in seeds:
        encoded, users, table, _ = prepare.prepare(ratings, movies, p.prepare.valid_fraction, seed)
        for name, value in baselines.baselines(encoded).items():
            results.setdefault(name, []).append(value["val_mse"])
        for name, mp in p.models.items():
            model, history, _ = train.train(encoded, len(users), len(table), mp.model_copy(update={"seed": seed}))
            results.setdefault(name, []).append(float(min(history["val_mse"])))
            print(f"  seed {seed} {name}: best val MSE {results[name][-1]:.4f}", flush=True)
    print(f"\nMovieLens validation MSE over seeds {seeds} (split and init seeded together):")
    for name, values in results.items():
        rmse = [v ** 0.5 for v in values]
        print(f"  {name:<12} MSE {mean_spread(values)}   RMSE {mean_spread(rmse)}")


def throughput(p, ratings, movies, name: str = "bias", epochs: int = 3) -> None:
    """ratings/s of the pipeline's train() (schedule, early stopping, MLflow epoch logging) vs a bare fit()."""
    import keras

    from stages.common.tracking import stage_run
    encoded, users, table, _ = prepare.prepare(ratings, movies, p.prepare.valid_fraction, p.prepare.seed)
    mp = p.models[name].model_copy(update={"epochs": epochs, "early_stopping_patience": None})
    trn, val = encoded[~encoded["valid"]], encoded[encoded["valid"]]

    keras.utils.set_random_seed(0)
    plain = train.build(mp, len(users), len(table))
    plain.compile(keras.optimizers.Adam(mp.lr_schedule[0][1]), loss="mse", metrics=["mse"])
    started = time.perf_counter()
    plain.fit(train.inputs(trn), trn["rating"].to_numpy("float32"), batch_size=mp.batch_size, epochs=epochs,
              validation_data=(train.inputs(val), val["rating"].to_numpy("float32")), verbose=0)
    plain_rate = len(trn) * epochs / (time.perf_counter() - started)

    with throwaway_mlflow_store(), stage_run("movielens", "benchmark") as run:
        _, _, pipeline_rate = train.train(encoded, len(users), len(table), mp, [run.keras_callback()])
    print(f"\nTraining throughput ({name}, {epochs} epochs, batch {mp.batch_size}): plain Keras {plain_rate:,.0f} "
          f"ratings/s, pipeline {pipeline_rate:,.0f} ratings/s, pipeline/plain = {pipeline_rate / plain_rate:.3f}")


def chain_wall_time() -> None:
    project = ProjectCopy()
    try:
        full = project.dvc("repro", "movielens_analyze", "movielens_evaluate", "movielens_baselines")
        noop = project.dvc("repro", "movielens_analyze", "movielens_evaluate", "movielens_baselines")
        flow_noop = project.flow("movielens_analyze", "movielens_evaluate", "movielens_baselines")
    finally:
        project.cleanup()
    print(f"\nWhole MovieLens chain with `dvc repro` (download from the mirror .. analyze): {full:.1f}s wall")
    print(f"No-op `dvc repro` of the chain: {noop:.1f}s; no-op Prefect flow (fresh ephemeral server): {flow_noop:.1f}s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--skip-chain", action="store_true", help="skip the timed `dvc repro` of the chain")
    args = parser.parse_args(argv)
    require_mirror()
    p = movielens_params.load()
    ratings, movies = load_real(p)
    print(f"MovieLens {p.dataset}: {len(ratings):,} ratings, {ratings['userId'].nunique():,} users, "
          f"{ratings['movieId'].nunique():,} movies")
    quality(p, ratings, movies, args.seeds)
    throughput(p, ratings, movies)
    if not args.skip_chain:
        chain_wall_time()


if __name__ == "__main__":
    main()
