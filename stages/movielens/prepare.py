"""movielens_prepare: contiguous ids, a seeded train/validation split, Parquet outputs."""

from __future__ import annotations

import pandas as pd

from stages.common.cli import run_stage
from stages.common.io import atomic_dir, write_json
from stages.movielens import data
from stages.movielens import params as movielens_params
from stages.movielens.paths import PREPARED, RAW


def prepare(ratings: pd.DataFrame, movies: pd.DataFrame, valid_fraction: float, seed: int):
    """Pure step: (ratings with user/movie/valid columns, movie table with titles and rating counts, stats)."""
    encoded, users, movie_ids = data.encode(ratings)
    encoded["valid"] = data.split(encoded, valid_fraction, seed).to_numpy()
    counts = encoded.groupby("movie").size().rename("n_ratings")
    table = movie_ids.merge(movies, on="movieId", how="left").join(counts, on="movie")
    # a rated movie missing from the movies file is labelled by id, like an empty title
    missing = table["title"].isna()
    table.loc[missing, "title"] = "movie " + table.loc[missing, "movieId"].astype(str)
    table["untitled"] = table["untitled"].astype("boolean").fillna(True).astype(bool)
    stats = {
        "n_ratings": len(encoded),
        "n_users": len(users),
        "n_movies": len(movie_ids),
        "n_train": int((~encoded["valid"]).sum()),
        "n_valid": int(encoded["valid"].sum()),
        "untitled_movies": int(table["untitled"].sum()),
    }
    return encoded[["user", "movie", "rating", "valid"]], users, table, stats


def main() -> None:
    p = movielens_params.load()
    ratings = data.read_ratings(RAW, p.dataset)
    movies = data.read_movies(RAW, p.dataset)
    encoded, users, table, stats = prepare(ratings, movies, p.prepare.valid_fraction, p.prepare.seed)
    with atomic_dir(PREPARED) as out:
        encoded.to_parquet(out / "ratings.parquet", index=False)
        users.to_parquet(out / "users.parquet", index=False)
        table.to_parquet(out / "movies.parquet", index=False)
        write_json(out / "stats.json", stats)
    print(
        f"prepared {stats['n_ratings']:,} ratings, {stats['n_users']:,} users, {stats['n_movies']:,} movies "
        f"({stats['n_train']:,} train / {stats['n_valid']:,} valid)"
    )


if __name__ == "__main__":
    run_stage(main)
