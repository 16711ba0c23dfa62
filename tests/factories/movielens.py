"""Small generated MovieLens archives with real structure (users like some genres), in each variant's format."""
from __future__ import annotations

import io
import zipfile

import numpy as np


def ratings_table(n_users: int = 40, n_movies: int = 60, per_user: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    user_taste, movie_style = rng.normal(size=(n_users, 3)), rng.normal(size=(n_movies, 3))
    movie_quality = rng.normal(scale=0.7, size=n_movies)
    rows = []
    for u in range(n_users):
        for m in rng.choice(n_movies, size=min(per_user, n_movies), replace=False):
            score = 3.2 + movie_quality[m] + 0.6 * user_taste[u] @ movie_style[m] + rng.normal(scale=0.3)
            rating = float(np.clip(np.round(score * 2) / 2, 0.5, 5.0))
            rows.append((u + 1, int(m) * 10 + 1, rating, 1_000_000_000 + len(rows)))
    return rows


def movielens_zip(rows=None, empty_titles: int = 2, dataset: str = "ml-latest-small") -> bytes:
    """A zip laid out like the named variant; the first `empty_titles` movies have an empty title."""
    rows = rows if rows is not None else ratings_table()
    movie_ids = sorted({r[1] for r in rows})
    titles = {m: ("" if i < empty_titles else f"Movie {m} ({1950 + i % 60})") for i, m in enumerate(movie_ids)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if dataset in ("ml-latest-small", "ml-25m"):
            zf.writestr(f"{dataset}/ratings.csv", "userId,movieId,rating,timestamp\n"
                        + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in rows))
            zf.writestr(f"{dataset}/movies.csv", "movieId,title,genres\n"
                        + "".join(f'{m},"{t}",Drama\n' for m, t in titles.items()))
        elif dataset == "ml-100k":
            zf.writestr("ml-100k/u.data", "".join(f"{u}\t{m}\t{max(1, round(r))}\t{t}\n" for u, m, r, t in rows))
            zf.writestr("ml-100k/u.item", "".join(f"{m}|{t}|01-Jan-1995||http://x|0|1\n" for m, t in titles.items())
                        .encode("latin-1"))
        elif dataset == "ml-1m":
            zf.writestr("ml-1m/ratings.dat", "".join(f"{u}::{m}::{max(1, round(r))}::{t}\n" for u, m, r, t in rows))
            zf.writestr("ml-1m/movies.dat", "".join(f"{m}::{t}::Drama\n" for m, t in titles.items())
                        .encode("latin-1"))
    return buf.getvalue()
