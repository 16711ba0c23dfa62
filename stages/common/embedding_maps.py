"""2-D maps of word embeddings (t-SNE), shared by the GloVe and IMDB stages."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages.common.cli import StageError


def tsne_map(words: list[str], vectors: np.ndarray, perplexity: float, seed: int) -> pd.DataFrame:
    """word, x, y of a 2-D t-SNE (cosine distances) of `vectors`, in the input order."""
    from sklearn.manifold import TSNE

    if perplexity >= len(words):
        raise StageError(
            f"t-SNE perplexity {perplexity} must be below the number of words ({len(words)}): "
            "lower perplexity or raise n_words in params.yaml"
        )
    coords = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(
        vectors.astype("float64")
    )
    return pd.DataFrame({"word": words, "x": coords[:, 0], "y": coords[:, 1]})


def map_figure(coords: pd.DataFrame, n_labelled: int, title: str):
    from stages.common.plots import labelled_scatter

    shown = coords.head(n_labelled)
    return labelled_scatter(
        shown["x"].to_numpy(), shown["y"].to_numpy(), shown["word"].tolist(), title, "t-SNE 1", "t-SNE 2"
    )
