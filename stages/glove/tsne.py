"""glove_tsne: a t-SNE map of the most frequent GloVe words (PNG with labels, CSV with every coordinate)."""

from __future__ import annotations

from stages.common.cli import run_stage
from stages.common.embedding_maps import map_figure, tsne_map
from stages.common.io import atomic_dir, save_figure, write_csv
from stages.common.word_vectors import read_glove
from stages.glove import params as glove_params
from stages.glove.paths import TSNE, VECTORS


def main() -> None:
    from stages.common.plots import close

    p = glove_params.load()
    words, vectors = read_glove(VECTORS.format(dim=p.dim), p.dim, limit=p.tsne.n_words)
    coords = tsne_map(words, vectors, p.tsne.perplexity, p.tsne.seed)
    with atomic_dir(TSNE) as out:
        write_csv(out / "glove_tsne.csv", coords)
        fig = map_figure(
            coords,
            p.tsne.n_labelled,
            f"GloVe {p.dim}d: t-SNE of the {len(words)} most frequent words "
            f"({min(p.tsne.n_labelled, len(words))} shown)",
        )
        save_figure(out / "glove_tsne.png", fig)
        close(fig)
    print(f"t-SNE of {len(words)} GloVe words written to {TSNE}")


if __name__ == "__main__":
    run_stage(main)
