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


ACCENTED_TITLE = "Misérables, Les (1995)"  # a real title; ml-100k and ml-1m spell it in Latin-1


def _u_data_line(user: int, movie: int, rating: float, timestamp: int) -> str:
    """ml-100k's u.data format: tab-separated, whole-star ratings."""
    return f"{user}\t{movie}\t{max(1, round(rating))}\t{timestamp}\n"


def movielens_zip(
    rows=None, empty_titles: int = 2, dataset: str = "ml-latest-small", full_layout: bool = False
) -> bytes:
    """A zip laid out like the named variant; the first `empty_titles` movies have an empty title.

    `full_layout`: the archive as released, with the files the readers do not use (README, links and tags;
    ml-100k's users, genres and its u1/ua splits of the same ratings; ml-1m's users) and the last movie titled
    ACCENTED_TITLE, encoded as the variant encodes its titles.
    """
    rows = rows if rows is not None else ratings_table()
    movie_ids = sorted({r[1] for r in rows})
    titles = {m: ("" if i < empty_titles else f"Movie {m} ({1950 + i % 60})") for i, m in enumerate(movie_ids)}
    if full_layout:
        titles[movie_ids[-1]] = ACCENTED_TITLE
    users = sorted({r[0] for r in rows})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if dataset in ("ml-latest-small", "ml-25m"):
            zf.writestr(
                f"{dataset}/ratings.csv",
                "userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in rows),
            )
            zf.writestr(
                f"{dataset}/movies.csv",
                "movieId,title,genres\n" + "".join(f'{m},"{t}",Drama\n' for m, t in titles.items()),
            )
            if full_layout:
                zf.writestr(
                    f"{dataset}/README.txt",
                    "Summary\n=======\nThis dataset (ml-latest-small) describes "
                    "5-star rating and free-text tagging activity from MovieLens.\n",
                )
                zf.writestr(
                    f"{dataset}/links.csv",
                    "movieId,imdbId,tmdbId\n" + "".join(f"{m},{114709 + m:07d},{862 + m}\n" for m in movie_ids),
                )
                zf.writestr(
                    f"{dataset}/tags.csv",
                    "userId,movieId,tag,timestamp\n"
                    + "".join(
                        f'{u},{m},"{tag}",{t}\n'
                        for (u, m, _, t), tag in zip(rows[::7], ["funny", "Café, Paris", "dark comedy"] * len(rows))
                    ),
                )
        elif dataset == "ml-100k":
            zf.writestr("ml-100k/u.data", "".join(_u_data_line(*row) for row in rows))
            genres = "|0" * 19 if full_layout else "|0|1"  # the release: 19 genre flags
            zf.writestr(
                "ml-100k/u.item",
                "".join(f"{m}|{t}|01-Jan-1995||http://x{genres}\n" for m, t in titles.items()).encode("latin-1"),
            )
            if full_layout:
                zf.writestr("ml-100k/README", "SUMMARY & USAGE LICENSE\n=======================\n")
                zf.writestr("ml-100k/u.info", f"{len(users)} users\n{len(movie_ids)} items\n{len(rows)} ratings\n")
                zf.writestr("ml-100k/u.genre", "unknown|0\nAction|1\nDrama|8\n\n")
                zf.writestr(
                    "ml-100k/u.user", "".join(f"{u}|{18 + u % 50}|{'MF'[u % 2]}|student|{10000 + u}\n" for u in users)
                )
                # the splits hold the same ratings again: reading them too would double the counts
                for name, keep in (
                    ("u1.base", lambda i: i % 5),
                    ("u1.test", lambda i: not i % 5),
                    ("ua.base", lambda i: i % 10),
                    ("ua.test", lambda i: not i % 10),
                ):
                    zf.writestr(f"ml-100k/{name}", "".join(_u_data_line(*row) for i, row in enumerate(rows) if keep(i)))
        elif dataset == "ml-1m":
            zf.writestr("ml-1m/ratings.dat", "".join(f"{u}::{m}::{max(1, round(r))}::{t}\n" for u, m, r, t in rows))
            zf.writestr("ml-1m/movies.dat", "".join(f"{m}::{t}::Drama\n" for m, t in titles.items()).encode("latin-1"))
            if full_layout:
                zf.writestr("ml-1m/README", "SUMMARY\n================================================\n")
                zf.writestr("ml-1m/users.dat", "".join(f"{u}::{'MF'[u % 2]}::25::4::{10000 + u}\n" for u in users))
    return buf.getvalue()


TARGETS = ["movielens_analyze", "movielens_evaluate", "movielens_baselines"]
CHAIN = [
    "movielens_download",
    "movielens_prepare",
    "movielens_baselines",
    "movielens_train@dot",
    "movielens_train@bias",
    "movielens_train@nn",
    "movielens_evaluate@dot",
    "movielens_evaluate@bias",
    "movielens_evaluate@nn",
    "movielens_analyze",
]


def small_movielens(project, http_server) -> None:
    """Serve generated ratings and size the three models to train in seconds."""
    url, sha = http_server.add("ml-latest-small.zip", movielens_zip())
    updates = {
        "movielens.sources.ml-latest-small": {"url": url, "sha256": sha},
        "movielens.analyze.top_movies": 20,
        "movielens.analyze.n_plotted": 10,
        "movielens.analyze.n_extremes": 3,
    }
    for name in ("dot", "bias", "nn"):
        updates |= {
            f"movielens.models.{name}.epochs": 2,
            f"movielens.models.{name}.factors": 4,
            f"movielens.models.{name}.batch_size": 64,
        }
    project.set_params(updates)
