"""movielens_analyze: movie biases and a PCA of movie embeddings among the most-rated movies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from stages.common.cli import run_stage
from stages.common.io import atomic_dir, load_keras, save_figure, write_csv, write_json
from stages.common.tracking import stage_run
from stages.movielens import params as movielens_params
from stages.movielens.params import AnalyzeParams
from stages.movielens.paths import ANALYSIS, MODEL, PREPARED


def movie_weights(model) -> tuple[np.ndarray, np.ndarray | None]:
    """(movie embedding matrix, movie bias vector or None for the dot model)."""
    embedding = model.get_layer("movie_embedding").get_weights()[0]
    names = {layer.name for layer in model.layers}
    bias = model.get_layer("movie_bias").get_weights()[0][:, 0] if "movie_bias" in names else None
    return embedding, bias


def top_movies(movies: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n most-rated movies (ties by id, so the choice is deterministic)."""
    return movies.sort_values(["n_ratings", "movie"], ascending=[False, True]).head(n).reset_index(drop=True)


def bias_extremes(movies: pd.DataFrame, bias: np.ndarray, n: int) -> pd.DataFrame:
    table = movies.assign(bias=bias[movies["movie"].to_numpy()]).sort_values("bias")
    low = table.head(n).assign(end="lowest")
    high = table.tail(n).iloc[::-1].assign(end="highest")
    return pd.concat([low, high])[["end", "movie", "movieId", "title", "n_ratings", "bias"]]


def pca_coordinates(
    movies: pd.DataFrame, embedding: np.ndarray, components: int, seed: int = 0
) -> tuple[pd.DataFrame, np.ndarray]:
    pca = PCA(n_components=components, random_state=seed)
    coords = pca.fit_transform(embedding[movies["movie"].to_numpy()])
    table = movies[["movie", "movieId", "title", "n_ratings"]].copy()
    for i in range(components):
        table[f"pc{i + 1}"] = coords[:, i]
    return table, pca.explained_variance_ratio_


def component_ends(coords: pd.DataFrame, components: int, n: int) -> dict[str, dict[str, list[str]]]:
    ends = {}
    for i in range(1, components + 1):
        ordered = coords.sort_values(f"pc{i}")
        ends[f"pc{i}"] = {
            "negative": ordered["title"].head(n).tolist(),
            "positive": ordered["title"].tail(n).iloc[::-1].tolist(),
        }
    return ends


def analyze(model, movies: pd.DataFrame, p: AnalyzeParams):
    """Pure step: (bias extremes or None, PCA coordinates, component ends, explained variance)."""
    embedding, bias = movie_weights(model)
    top = top_movies(movies, p.top_movies)
    extremes = bias_extremes(top, bias, p.n_extremes) if bias is not None else None
    coords, variance = pca_coordinates(top, embedding, p.pca_components)
    return extremes, coords, component_ends(coords, p.pca_components, p.n_extremes), variance


def pc_scatter(coords: pd.DataFrame, n_plotted: int, x: str = "pc1", y: str = "pc3"):
    from stages.common.plots import labelled_scatter

    shown = coords.head(n_plotted)  # the most-rated movies: titles people recognise
    return labelled_scatter(
        shown[x].to_numpy(),
        shown[y].to_numpy(),
        shown["title"].tolist(),
        f"MovieLens movie embeddings: {x.upper()} vs {y.upper()} ({len(shown)} most-rated movies)",
        x.upper(),
        y.upper(),
        figsize=(12, 12),
    )


def bias_figure(extremes: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 8))
    colors = ["tab:red" if e == "lowest" else "tab:green" for e in extremes["end"]]
    ax.barh(extremes["title"], extremes["bias"], color=colors)
    ax.invert_yaxis()
    ax.set(title="Movie biases: the lowest and highest among the most-rated movies", xlabel="learned bias")
    return fig


def main() -> None:
    import stages.movielens.models  # noqa: F401  registers the custom layers for loading
    from stages.common.plots import close

    p = movielens_params.load()
    model_path = MODEL.format(name=p.analyze.model)
    movies = pd.read_parquet(f"{PREPARED}/movies.parquet")
    extremes, coords, ends, variance = analyze(load_keras(model_path), movies, p.analyze)
    with atomic_dir(ANALYSIS) as out:
        write_csv(out / "pca.csv", coords)
        write_json(out / "pca_ends.json", {"explained_variance_ratio": variance.tolist(), "ends": ends})
        fig = pc_scatter(coords, p.analyze.n_plotted)
        save_figure(out / "pca_pc1_pc3.png", fig)
        close(fig)
        if extremes is not None:
            write_csv(out / "bias_extremes.csv", extremes)
            fig = bias_figure(extremes)
            save_figure(out / "bias_extremes.png", fig)
            close(fig)
    with stage_run(
        "movielens", "movielens_analyze", params=p.analyze.model_dump(), inputs=[PREPARED, model_path]
    ) as run:
        for path in sorted(Path(ANALYSIS).iterdir()):
            run.log_artifact(path, "analysis")
    for pc, sides in ends.items():
        print(f"{pc}: - {', '.join(sides['negative'][:3])} | + {', '.join(sides['positive'][:3])}")


if __name__ == "__main__":
    run_stage(main)
