"""Reading the MovieLens variants, each in its own file format, with row-level validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.cli import StageError

MIN_RATING, MAX_RATING = 0.5, 5.0

# name -> (ratings file, its reader args, movies file, its reader args); paths relative to the extracted folder
FORMATS = {
    "ml-latest-small": ("ml-latest-small/ratings.csv", {"sep": ","}, "ml-latest-small/movies.csv", {"sep": ","}),
    "ml-25m": ("ml-25m/ratings.csv", {"sep": ","}, "ml-25m/movies.csv", {"sep": ","}),
    "ml-100k": (
        "ml-100k/u.data",
        {"sep": "\t", "header": None, "names": ["userId", "movieId", "rating", "timestamp"]},
        "ml-100k/u.item",
        {"sep": "|", "header": None, "usecols": [0, 1], "names": ["movieId", "title"], "encoding": "latin-1"},
    ),
    "ml-1m": (
        "ml-1m/ratings.dat",
        {"sep": "::", "header": None, "names": ["userId", "movieId", "rating", "timestamp"], "engine": "python"},
        "ml-1m/movies.dat",
        {
            "sep": "::",
            "header": None,
            "names": ["movieId", "title", "genres"],
            "engine": "python",
            "encoding": "latin-1",
        },
    ),
}


def archive_members(dataset: str) -> list[str]:
    ratings, _, movies, _ = FORMATS[dataset]
    return [ratings, movies]


def read_ratings(raw_dir: str | Path, dataset: str) -> pd.DataFrame:
    """userId, movieId (ints), rating (float32 in [0.5, 5]); any bad row is an error naming file and line."""
    rel, kwargs, _, _ = FORMATS[dataset]
    path = Path(raw_dir) / rel
    header_lines = 0 if kwargs.get("header", "infer") is None else 1
    try:
        # blank lines stay rows (dropped below) so that row i is line i + 1 + header_lines
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, **kwargs)
    except pd.errors.ParserError as err:
        raise StageError(f"{path}: malformed ratings file: {err}") from None
    except pd.errors.EmptyDataError:
        raise StageError(f"{path}, line 1: the file is empty (truncated download or extraction?)") from None
    except UnicodeDecodeError as err:
        raise StageError(
            f"{path}, line {_first_undecodable_line(path, kwargs.get('encoding', 'utf-8'))}: "
            f"not {kwargs.get('encoding', 'utf-8')} text ({err.reason}); is it the right file?"
        ) from None
    missing = {"userId", "movieId", "rating"} - set(df.columns)
    if missing:
        raise StageError(
            f"{path}, line 1 (the header): missing column(s) {', '.join(sorted(missing))} "
            f"(found: {', '.join(map(str, df.columns))})"
        )
    blank = (df == "").all(axis=1)
    out = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in ("userId", "movieId", "rating")})
    bad = out.isna().any(axis=1) | ~out["rating"].between(MIN_RATING, MAX_RATING)
    ids = out[["userId", "movieId"]]
    bad |= ((ids % 1) != 0).any(axis=1) | (ids.abs() >= 2**53).any(axis=1)
    bad &= ~blank
    out = out[~blank]
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        row = df.iloc[first]
        raise StageError(
            f"{path}, line {first + 1 + header_lines}: bad rating row "
            f"(userId={row['userId']!r}, movieId={row['movieId']!r}, rating={row['rating']!r}); "
            f"ids must be integers and rating a number in [{MIN_RATING}, {MAX_RATING}]. "
            f"{int(bad.sum())} bad row(s) in all; fix or remove them."
        )
    return out.astype({"userId": "int64", "movieId": "int64", "rating": "float32"}).reset_index(drop=True)


def _first_undecodable_line(path: Path, encoding: str) -> int:
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                return number
    return 1


def read_movies(raw_dir: str | Path, dataset: str) -> pd.DataFrame:
    """movieId, title, untitled; empty titles become 'movie <id>' so they are labelled, never dropped."""
    _, _, rel, kwargs = FORMATS[dataset]
    path = Path(raw_dir) / rel
    df = pd.read_csv(path, dtype=str, keep_default_na=False, **kwargs)[["movieId", "title"]]
    df["movieId"] = pd.to_numeric(df["movieId"], errors="coerce")
    df = df.dropna(subset=["movieId"]).astype({"movieId": "int64"})
    df["untitled"] = df["title"].str.strip() == ""
    df.loc[df["untitled"], "title"] = "movie " + df.loc[df["untitled"], "movieId"].astype(str)
    return df


def split(ratings: pd.DataFrame, valid_fraction: float, seed: int) -> pd.Series:
    """Seeded random split: True for validation rows."""
    rng = np.random.default_rng(seed)
    return pd.Series(rng.random(len(ratings)) < valid_fraction, index=ratings.index)


def encode(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Contiguous 0-based ids: (ratings with user/movie columns, user id map, movie id map)."""
    users = pd.DataFrame({"userId": np.sort(ratings["userId"].unique())})
    users["user"] = np.arange(len(users), dtype="int32")
    movies = pd.DataFrame({"movieId": np.sort(ratings["movieId"].unique())})
    movies["movie"] = np.arange(len(movies), dtype="int32")
    out = ratings.merge(users, on="userId").merge(movies, on="movieId")
    return out, users, movies
