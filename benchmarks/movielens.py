"""MovieLens benchmark on the real data: quality over 3 seeds, throughput vs a plain Keras script, chain wall time.

LESSON5_MIRROR=../shared/data python -m benchmarks.movielens [--seeds 1 2 3]
LESSON5_MIRROR=../shared/data python -m benchmarks.movielens --sparse [--models bias] [--lookup-l2 0.05 0.3]
  (the models with the large-data settings: docs/movielens.md#settings-per-dataset-size)
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.common import (
    ProjectCopy,
    benchmark_command,
    mean_and_spread,
    mean_spread,
    record_result,
    require_mirror,
    throwaway_mlflow_store,
)
from stages.common.download import TrustRecord, fetch_and_extract
from stages.movielens import baselines, data, prepare, train
from stages.movielens import params as movielens_params

FASTAI_VAL_MSE = {"bias": "0.7979 (aim <= 0.77)", "nn": "<= 0.80 (goal)"}
DESCRIPTIONS = {
    "global_mean": "baseline: the training mean rating",
    "movie_mean": "baseline: each movie's training mean rating",
    "dot": "dot product",
    "bias": "dot + biases (the headline model)",
    "nn": "neural net",
}


def load_real(p) -> tuple:
    raw = tempfile.mkdtemp(prefix="movielens-raw-")
    fetch_and_extract(p.sources[p.dataset], raw, TrustRecord("movielens"), members=data.archive_members(p.dataset))
    return data.read_ratings(raw, p.dataset), data.read_movies(raw, p.dataset)


def quality(
    p, ratings, movies, seeds: list[int], command: str, sparse: bool = False, models=None, lookup_l2=None
) -> None:
    """Validation MSE per model over seeds, with the baselines. `sparse`: the models with the large-data settings
    (no baselines), `lookup_l2` replacing theirs; `models`: only these."""
    overrides = {}
    if sparse:
        overrides = dict(movielens_params.LARGE_DATA_SETTINGS) | ({"lookup_l2": lookup_l2} if lookup_l2 else {})
    results: dict[str, list[float]] = {}
    for seed in seeds:
        encoded, users, table, _ = prepare.prepare(ratings, movies, p.prepare.valid_fraction, seed)
        if not sparse:
            for name, value in baselines.baselines(encoded).items():
                results.setdefault(name, []).append(value["val_mse"])
        for name, mp in p.models.items():
            if models and name not in models:
                continue
            update = {**overrides, "seed": seed}
            model, history, _ = train.train(encoded, len(users), len(table), mp.model_copy(update=update))
            results.setdefault(name, []).append(float(min(history["val_mse"])))
            print(f"  seed {seed} {name}: best val MSE {results[name][-1]:.4f}", flush=True)
    print(f"\nMovieLens validation MSE over seeds {seeds} (split and init seeded together) {overrides}:")
    for name, values in results.items():
        rmse = [v**0.5 for v in values]
        print(f"  {name:<12} MSE {mean_spread(values)}   RMSE {mean_spread(rmse)}")
        figure = f"movielens.{name}"
        setting = ""
        if sparse:
            figure = f"movielens.sparse.{name}" + (f".lookup_l2_{lookup_l2:g}" if lookup_l2 else "")
            setting = f" with the large-data settings (sparse updates, lookup_l2 {overrides['lookup_l2']:g})"
        for metric, unit, figures in (("val_mse", "MSE", values), ("val_rmse", "RMSE", rmse)):
            mean, spread = mean_and_spread(figures, 4)
            record_result(
                "movielens",
                f"{figure}.{metric}",
                mean,
                description=f"{DESCRIPTIONS.get(name, name)}{setting}, validation {unit}",
                unit=unit,
                spread=spread,
                seeds=seeds,
                per_seed=[round(v, 4) for v in figures],
                fastai=FASTAI_VAL_MSE.get(name) if metric == "val_mse" and not sparse else None,
                command=command,
                note="split and initialisation seeded together",
            )


def throughput(p, ratings, movies, command: str, name: str = "bias", epochs: int = 3) -> None:
    """ratings/s of the pipeline's train() (schedule, early stopping, MLflow epoch logging) vs a bare fit()."""
    import keras

    from stages.common.tracking import stage_run

    encoded, users, table, _ = prepare.prepare(ratings, movies, p.prepare.valid_fraction, p.prepare.seed)
    mp = p.models[name].model_copy(update={"epochs": epochs, "early_stopping_patience": None})
    trn, val = encoded[~encoded["valid"]], encoded[encoded["valid"]]

    keras.utils.set_random_seed(0)
    plain = train.build(mp, len(users), len(table), training=True)
    plain.compile(train.optimizer(mp, mp.lr_schedule[0][1]), loss="mse", metrics=["mse"])
    started = time.perf_counter()
    plain.fit(
        train.inputs(trn),
        trn["rating"].to_numpy("float32"),
        batch_size=mp.batch_size,
        epochs=epochs,
        validation_data=(train.inputs(val), val["rating"].to_numpy("float32")),
        verbose=0,
    )
    plain_rate = len(trn) * epochs / (time.perf_counter() - started)

    with throwaway_mlflow_store(), stage_run("movielens", "benchmark") as run:
        _, _, pipeline_rate = train.train(encoded, len(users), len(table), mp, [run.keras_callback()])
    print(
        f"\nTraining throughput ({name}, {epochs} epochs, batch {mp.batch_size}): plain Keras {plain_rate:,.0f} "
        f"ratings/s, pipeline {pipeline_rate:,.0f} ratings/s, pipeline/plain = {pipeline_rate / plain_rate:.3f}"
    )
    setting = f"{epochs} epochs, batch {mp.batch_size}"
    for figure, description, value, unit in (
        ("plain_keras_ratings_per_s", "training throughput of a bare Keras fit()", round(plain_rate), "ratings/s"),
        (
            "pipeline_ratings_per_s",
            "training throughput of the pipeline's train() (schedule, early stopping, MLflow per-epoch logging)",
            round(pipeline_rate),
            "ratings/s",
        ),
        (
            "pipeline_over_plain",
            "pipeline train() throughput / bare Keras fit() throughput",
            round(pipeline_rate / plain_rate, 3),
            "",
        ),
    ):
        record_result(
            "movielens",
            f"movielens.{name}.{figure}",
            value,
            description=f"{description}, {name} model",
            unit=unit,
            command=command,
            note=setting,
        )


def chain_wall_time(command: str) -> None:
    project = ProjectCopy()
    try:
        full = project.dvc("repro", "movielens_analyze", "movielens_evaluate", "movielens_baselines")
        noop = project.dvc("repro", "movielens_analyze", "movielens_evaluate", "movielens_baselines")
        flow_noop = project.flow("movielens_analyze", "movielens_evaluate", "movielens_baselines")
    finally:
        project.cleanup()
    print(f"\nWhole MovieLens chain with `dvc repro` (download from the mirror .. analyze): {full:.1f}s wall")
    print(f"No-op `dvc repro` of the chain: {noop:.1f}s; no-op Prefect flow (fresh ephemeral server): {flow_noop:.1f}s")
    for figure, description, seconds, goal in (
        ("repro_s", "the whole MovieLens chain with `dvc repro` (mirror copy .. analyze, 3 models)", full, None),
        ("noop_repro_s", "no-op `dvc repro` of the MovieLens chain", noop, "< 5 s (goal)"),
        ("noop_flow_s", "no-op Prefect flow over the MovieLens chain (fresh ephemeral server)", flow_noop, None),
    ):
        record_result(
            "movielens",
            f"movielens.chain.{figure}",
            round(seconds, 1),
            description=description,
            unit="s",
            fastai=goal,
            command=command,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--skip-chain", action="store_true", help="skip the timed `dvc repro` of the chain")
    parser.add_argument(
        "--sparse", action="store_true", help="only the models' quality with the large-data settings (params.py)"
    )
    parser.add_argument("--models", nargs="+", help="with --sparse: only these models")
    parser.add_argument("--lookup-l2", type=float, nargs="+", help="with --sparse: one run per lookup_l2 value")
    args = parser.parse_args(argv)
    require_mirror()
    p = movielens_params.load()
    ratings, movies = load_real(p)
    print(
        f"MovieLens {p.dataset}: {len(ratings):,} ratings, {ratings['userId'].nunique():,} users, "
        f"{ratings['movieId'].nunique():,} movies"
    )
    command = benchmark_command("benchmarks.movielens", argv)
    if args.sparse:
        for lookup_l2 in args.lookup_l2 or [None]:
            quality(p, ratings, movies, args.seeds, command, sparse=True, models=args.models, lookup_l2=lookup_l2)
        return
    quality(p, ratings, movies, args.seeds, command)
    throughput(p, ratings, movies, command)
    if not args.skip_chain:
        chain_wall_time(command)


if __name__ == "__main__":
    main()
