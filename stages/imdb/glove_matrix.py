"""imdb_glove_matrix <glove vectors file>: the embedding matrix of the IMDB vocabulary from GloVe, with fast.ai's
recipe for the rest.

Row 0 (padding) is zero; vocabulary words found in GloVe get their vector; the others and the rare-word row get
normal(0, oov_scale) draws; the whole matrix is then divided by `divide_by`. The vectors file is the GloVe
workload's output, named on the command line by dvc.yaml (glove.dim chooses it); its width is the matrix's.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from stages.common.cli import run_stage
from stages.common.io import atomic_dir, save_npy, write_json
from stages.common.word_vectors import read_glove
from stages.imdb import params as imdb_params
from stages.imdb.params import GloveMatrixParams
from stages.imdb.paths import GLOVE, VOCAB


def embedding_matrix(
    vocab: list[str], glove_words: list[str], glove_vectors: np.ndarray, p: GloveMatrixParams
) -> tuple[np.ndarray, np.ndarray]:
    """(matrix of shape (len(vocab) + 2, dim), bool mask of rows taken from GloVe)."""
    index = {word: i for i, word in enumerate(glove_words)}
    dim = glove_vectors.shape[1]
    rng = np.random.default_rng(p.seed)
    matrix = rng.normal(0.0, p.oov_scale, size=(len(vocab) + 2, dim)).astype("float32")
    matrix[0] = 0.0
    found = np.zeros(len(vocab) + 2, dtype=bool)
    for row, word in enumerate(vocab, start=1):
        if word in index:
            matrix[row] = glove_vectors[index[word]]
            found[row] = True
    return matrix / p.divide_by, found


def main(vectors_file: str) -> None:
    p = imdb_params.load().glove_matrix
    vocab = pd.read_csv(VOCAB, keep_default_na=False)["word"].astype(str).tolist()
    words, vectors = read_glove(vectors_file, None)
    matrix, found = embedding_matrix(vocab, words, vectors, p)
    coverage = float(found[1 : len(vocab) + 1].mean())
    missing = [w for w, hit in zip(vocab, found[1:]) if not hit]
    with atomic_dir(GLOVE) as out:
        save_npy(out / "embedding.npy", matrix)
        save_npy(out / "in_glove.npy", found)
        write_json(
            out / "coverage.json",
            {
                "vocabulary_words": len(vocab),
                "in_glove": int(found.sum()),
                "coverage": coverage,
                "missing_examples": missing[:50],
            },
        )
    print(
        f"GloVe {matrix.shape[1]}d covers {found.sum():,} of {len(vocab):,} vocabulary words ({coverage:.1%}); "
        f"missing e.g.: {', '.join(missing[:8])}"
    )


if __name__ == "__main__":
    run_stage(main, sys.argv[1])
