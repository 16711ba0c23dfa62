"""MovieLens cost against size: synthetic ratings at 100k, 1M, 5M and 25M in the real archives' layouts.

Each size is a generated archive (ml-100k's u.data, ml-1m's ratings.dat, ml-25m's CSVs; user and movie counts as in
those releases; ratings from a planted low-rank model with long-tailed popularity) served by a throwaway mirror.
Per size it records:
- the chain (download, prepare, baselines, train@bias for one epoch, evaluate@bias, analyze) run stage by stage with
  `dvc repro -s` in a project copy: each stage's wall time and peak RSS;
- training throughput of every model with fast.ai's settings (whole-table L2, Adam) and with the large-data settings
  (`sparse_updates`, `lookup_l2`; docs/movielens.md), measured on a sample of the ratings with the full-size tables.

LESSON5_MIRROR is not needed. `python -m benchmarks.movielens_scale [--sizes 100k 1m 5m 25m] [--probe-ratings N]
[--probe-only [--settings sparse] | --chain-only]`
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import RESULTS_DIR, ProjectCopy, benchmark_command, record_result
from stages.movielens.params import LARGE_DATA_SETTINGS as SPARSE

SIZES = {  # name: (layout served, users, movies, ratings), the counts of the release each layout comes from
    "100k": ("ml-100k", 943, 1_682, 100_000),
    "1m": ("ml-1m", 6_040, 3_706, 1_000_209),
    "5m": ("ml-25m", 60_000, 40_000, 5_000_000),
    "25m": ("ml-25m", 162_541, 59_047, 25_000_095),
}
CHAIN = [
    "movielens_download",
    "movielens_prepare",
    "movielens_baselines",
    "movielens_train@bias",
    "movielens_evaluate@bias",
    "movielens_analyze",
]


def synthetic_ratings(n_users: int, n_movies: int, n_ratings: int, seed: int = 0) -> pd.DataFrame:
    """Distinct (user, movie) pairs drawn with long-tailed activity and popularity; rating = clipped half stars of a
    rank-5 model plus noise, so the models have something to learn."""
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.2, n_users)
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.9
    pairs = np.empty(0, dtype=np.int64)
    while len(pairs) < n_ratings:
        draw = int((n_ratings - len(pairs)) * 1.15) + 1000
        users = rng.choice(n_users, draw, p=activity / activity.sum())
        movies = rng.choice(n_movies, draw, p=popularity / popularity.sum())
        pairs = np.unique(np.concatenate([pairs, users.astype(np.int64) * n_movies + movies]))
    pairs = rng.permutation(pairs)[:n_ratings]
    pairs.sort()  # the releases list ratings by user
    users, movies = pairs // n_movies, pairs % n_movies
    taste, style = rng.normal(0, 0.45, (n_users, 5)), rng.normal(0, 0.45, (n_movies, 5))
    score = 3.5 + rng.normal(0, 0.35, n_users)[users] + rng.normal(0, 0.5, n_movies)[movies]
    score += np.einsum("ij,ij->i", taste[users], style[movies]) + rng.normal(0, 0.8, n_ratings)
    return pd.DataFrame(
        {
            "userId": users + 1,
            "movieId": movies + 1,
            "rating": np.clip(np.round(score * 2) / 2, 0.5, 5.0),
            "timestamp": 1_000_000_000 + np.arange(n_ratings),
        }
    )


def archive(layout: str, ratings: pd.DataFrame, n_movies: int) -> bytes:
    """The ratings and a movie list in `layout`'s own files and formats."""
    ids = np.arange(1, n_movies + 1)
    titles = [f"Movie {m} ({1950 + m % 60})" for m in ids]
    whole = ratings.assign(rating=ratings["rating"].round().clip(1, 5).astype(int))  # whole stars before ml-latest
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        if layout == "ml-100k":
            zf.writestr("ml-100k/u.data", whole.to_csv(sep="\t", header=False, index=False))
            item = "".join(f"{m}|{t}|01-Jan-1995||http://x{'|0' * 19}\n" for m, t in zip(ids, titles))
            zf.writestr("ml-100k/u.item", item.encode("latin-1"))
        elif layout == "ml-1m":
            zf.writestr("ml-1m/ratings.dat", "".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in whole.itertuples(False)))
            zf.writestr(
                "ml-1m/movies.dat", "".join(f"{m}::{t}::Drama\n" for m, t in zip(ids, titles)).encode("latin-1")
            )
        else:
            zf.writestr(f"{layout}/ratings.csv", ratings.to_csv(index=False))
            zf.writestr(
                f"{layout}/movies.csv",
                pd.DataFrame({"movieId": ids, "title": titles, "genres": "Drama"}).to_csv(index=False),
            )
    return buf.getvalue()


def serve(layout: str, blob: bytes) -> str:
    """A mirror folder holding the archive under its canonical name, with SHA256SUMS."""
    mirror = Path(tempfile.mkdtemp(prefix="movielens-scale-mirror-"))
    (mirror / f"{layout}.zip").write_bytes(blob)
    (mirror / "SHA256SUMS").write_text(f"{hashlib.sha256(blob).hexdigest()}  {layout}.zip\n")
    return str(mirror)


# Runs a command and prints its process tree's peak RSS in KiB. A child forked from this benchmark would report
# the benchmark's own peak (Linux keeps the high-water mark across fork and exec); one forked from this small
# launcher reports its own.
PEAK_RSS_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed_stage(project: ProjectCopy, stage: str) -> tuple[float, float]:
    """(wall s, peak RSS in GB of the stage's process tree) of `dvc repro -s <stage>`."""
    dvc = str(Path(sys.executable).parent / "dvc")  # as ProjectCopy.dvc finds it
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_LAUNCHER, dvc, "repro", "-s", stage],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"{stage} failed (exit {done.returncode}) in {project.root}")
    return time.perf_counter() - started, int(done.stdout.split()[-1]) / 2**20  # ru_maxrss: KiB on Linux


def chain(size: str, layout: str, mirror: str) -> tuple[dict[str, tuple[float, float]], pd.DataFrame, tuple[int, int]]:
    """(each stage's wall s and peak RSS GB, the prepared ratings, (users, movies))."""
    os.environ["LESSON5_MIRROR"] = mirror
    params = {"movielens.dataset": layout}
    params |= {f"movielens.models.bias.{key}": value for key, value in SPARSE.items()}
    params |= {"movielens.models.bias.epochs": 1, "movielens.models.bias.early_stopping_patience": None}
    project = ProjectCopy(params)
    figures = {}
    try:
        for stage in CHAIN:
            figures[stage] = timed_stage(project, stage)
            print(f"  {size} {stage}: {figures[stage][0]:.1f} s, peak RSS {figures[stage][1]:.2f} GB", flush=True)
        prepared = project.root / "data/movielens/prepared"
        sample = pd.read_parquet(prepared / "ratings.parquet")
        counts = len(pd.read_parquet(prepared / "users.parquet")), len(pd.read_parquet(prepared / "movies.parquet"))
    finally:
        project.cleanup()
    return figures, sample, counts


def prepared_here(generated: pd.DataFrame, n_movies: int) -> tuple[pd.DataFrame, tuple[int, int]]:
    """What movielens_prepare makes of the generated ratings (its pure step, the default split), without the chain."""
    from stages.movielens import prepare

    ids = np.arange(1, n_movies + 1)
    movies = pd.DataFrame({"movieId": ids, "title": [f"Movie {m}" for m in ids], "untitled": False})
    encoded, users, table, _ = prepare.prepare(generated[["userId", "movieId", "rating"]], movies, 0.2, 42)
    return encoded, (len(users), len(table))


def probe(
    ratings: pd.DataFrame, n_users: int, n_movies: int, n_train: int, settings=("fastai", "sparse")
) -> dict[tuple[str, str], float]:
    """ratings/s of train() per model and setting over n_train training ratings (+10% for validation each epoch) with
    the full-size tables: one epoch over a sample, or as many epochs as that takes where there are fewer ratings, so
    the first epoch's tracing weighs the same at every size."""
    from stages.movielens import params as movielens_params
    from stages.movielens import train

    rng = np.random.default_rng(0)
    train_rows = ratings[~ratings["valid"]]
    valid_rows = ratings[ratings["valid"]]
    sample = pd.concat(
        [
            train_rows.iloc[rng.choice(len(train_rows), min(n_train, len(train_rows)), replace=False)],
            valid_rows.iloc[rng.choice(len(valid_rows), min(n_train // 10, len(valid_rows)), replace=False)],
        ]
    )
    epochs = -(-n_train // len(train_rows))  # ceil
    rates = {}
    for name, mp in movielens_params.load().models.items():
        for setting, overrides in (("fastai", {}), ("sparse", SPARSE)):
            if setting not in settings:
                continue
            p = mp.model_copy(update={**overrides, "epochs": epochs, "early_stopping_patience": None})
            _, _, rates[name, setting] = train.train(sample, n_users, n_movies, p)
            print(f"    {name} {setting}: {rates[name, setting]:,.0f} ratings/s", flush=True)
    return rates


def record_ratios(command: str, small: str = "100k", large: str = "25m") -> None:
    """Training throughput at `large` over that at `small`, per model: fast.ai's settings at both sizes (what grows
    with the tables), the large-data settings at both, and the recommendation (each size's settings: fast.ai's at
    `small`, the large-data ones at `large`; the goal is >= 0.7)."""
    import json

    records = {r["figure"]: r["value"] for r in json.loads((RESULTS_DIR / "movielens.json").read_text())}
    for model in ("dot", "bias", "nn"):
        rate = {
            (size, setting): records.get(f"movielens.scale.{size}.train_{model}_{setting}.ratings_per_s")
            for size in (small, large)
            for setting in ("fastai", "sparse")
        }
        if None in rate.values():
            continue
        for name, (low, high), goal in (
            ("fastai", ("fastai", "fastai"), None),
            ("sparse", ("sparse", "sparse"), None),
            ("recommended", ("fastai", "sparse"), ">= 0.7 (goal)"),
        ):
            record_result(
                "movielens",
                f"movielens.scale.{large}_over_{small}.{model}_{name}",
                round(rate[large, high] / rate[small, low], 3),
                description=f"{model} training ratings/s at {large} ({high} settings) / at {small} ({low} settings)",
                unit="",
                fastai=goal,
                command=command,
            )


def plot(path: Path) -> None:
    """Cost against size from the records (every size measured so far)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = {r["figure"]: r["value"] for r in json.loads((RESULTS_DIR / "movielens.json").read_text())}
    sizes = [s for s in SIZES if f"movielens.scale.{s}.movielens_prepare.wall_s" in records]
    x = [SIZES[s][3] for s in sizes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for model in ("dot", "bias", "nn"):
        for setting, style in (("fastai", "--"), ("sparse", "-")):
            y = [records.get(f"movielens.scale.{s}.train_{model}_{setting}.ratings_per_s") for s in sizes]
            left.plot(x, y, style, marker="o", label=f"{model}, {setting}")
    left.set(xscale="log", yscale="log", xlabel="ratings", ylabel="training ratings/s", title="Training throughput")
    left.legend()
    for stage in CHAIN:
        y = [records.get(f"movielens.scale.{s}.{stage}.wall_s") for s in sizes]
        right.plot(x, y, marker="o", label=stage)
    right.set(xscale="log", yscale="log", xlabel="ratings", ylabel="wall s (dvc repro -s)", title="Stage wall time")
    right.legend(fontsize=8)
    fig.suptitle("MovieLens cost against size (synthetic ratings, 2-core CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def record_chain(size: str, figures: dict[str, tuple[float, float]], note: str, command: str) -> None:
    for stage, (wall, rss) in figures.items():
        for figure, value, unit, what in (
            ("wall_s", round(wall, 1), "s", "wall time"),
            ("peak_rss_gb", round(rss, 2), "GB", "peak RSS"),
        ):
            record_result(
                "movielens",
                f"movielens.scale.{size}.{stage}.{figure}",
                value,
                description=f"{what} of `dvc repro -s {stage}` at {size} synthetic ratings",
                unit=unit,
                command=command,
                note=note,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--probe-ratings", type=int, default=300_000, help="training ratings per throughput probe")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--probe-only", action="store_true", help="only the throughput probes (no archive, no chain)")
    only.add_argument("--chain-only", action="store_true", help="only the chain (no throughput probes)")
    parser.add_argument("--settings", nargs="+", choices=["fastai", "sparse"], default=["fastai", "sparse"])
    args = parser.parse_args(argv)
    command = benchmark_command("benchmarks.movielens_scale", argv)
    for size in args.sizes:
        layout, n_users, n_movies, n_ratings = SIZES[size]
        started = time.perf_counter()
        generated = synthetic_ratings(n_users, n_movies, n_ratings)
        note = f"{layout} layout, {n_users:,} users, {n_movies:,} movies"
        if args.probe_only:
            prepared, counts = prepared_here(generated, n_movies)
        else:
            mirror = serve(layout, archive(layout, generated, n_movies))
            print(
                f"{size}: {n_ratings:,} ratings as {layout}, made in {time.perf_counter() - started:.0f} s", flush=True
            )
            try:
                figures, prepared, counts = chain(size, layout, mirror)
            finally:
                shutil.rmtree(mirror)  # the 25M archive alone is ~0.6 GB
            record_chain(size, figures, f"{note}; train@bias: 1 epoch, sparse settings", command)
        if args.chain_only:
            continue
        for (model, setting), rate in probe(prepared, *counts, args.probe_ratings, args.settings).items():
            record_result(
                "movielens",
                f"movielens.scale.{size}.train_{model}_{setting}.ratings_per_s",
                round(rate),
                description=f"training throughput of {model} with the {setting} settings at {size} synthetic ratings",
                unit="ratings/s",
                command=command,
                note=f"{note}; {args.probe_ratings:,} training ratings (a sample, or several epochs) with the "
                "full-size tables",
            )
        print(f"  peak RSS of this process so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    record_ratios(command)
    plot(RESULTS_DIR / "movielens_scale.png")


if __name__ == "__main__":
    main()
