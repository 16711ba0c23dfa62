"""glove_tsne: a t-SNE map of the most frequent GloVe words (PNG with labels, CSV with every coordinate)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, save_figure, write_csv
from stages.glove import params as glove_params
from stages.glove.download import RAW_DIR, vectors_file
from stages.glove.matrix import read_glove

OUT_DIR = "data/glove/tsne"


def tsne_map(words: list[str], vectors: np.ndarray, perplexity: float, seed: int) -> pd.DataFrame:
    """word, x, y of a 2-D t-SNE (cosine distances) of `vectors`, in the input order."""
    from sklearn.manifold import TSNE
    if perplexity >= len(words):
        raise StageError(f"t-SNE perplexity {perplexity} must be below the number of words ({len(words)}): "
                         "lower perplexity or raise n_words in params.yaml")
    coords = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca",
                  random_state=seed).fit_transform(vectors.astype("float64"))
    return pd.DataFrame({"word": words, "x": coords[:, 0], "y": coords[:, 1]})


def map_figure(coords: pd.DataFrame, n_labelled: int, title: str):
    from stages.common.plots import labelled_scatter
    shown = coords.head(n_labelled)
    return labelled_scatter(shown["x"].to_numpy(), shown["y"].to_numpy(), shown["word"].tolist(),
                            title, "t-SNE 1", "t-SNE 2")


def main() -> None:
    from stages.common.plots import close
    p = glove_params.load()
    words, vectors = read_glove(Path(RAW_DIR) / vectors_file(p.dim), p.dim, limit=p.tsne.n_words)
    coords = tsne_map(words, vectors, p.tsne.perplexity, p.tsne.seed)
    with atomic_dir(OUT_DIR) as out:
        write_csv(out / "glove_tsne.csv", coords)
        fig = map_figure(coords, p.tsne.n_labelled, f"GloVe {p.dim}d: t-SNE of the {len(words)} most frequent words "
                                                    f"({min(p.tsne.n_labelled, len(words))} shown)")
        save_figure(out / "glove_tsne.png", fig)
        close(fig)
    print(f"t-SNE of {len(words)} GloVe words written to {OUT_DIR}")


if __name__ == "__main__":
    run_stage(main)
