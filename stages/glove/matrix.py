"""glove_matrix: the embedding matrix of the IMDB vocabulary from GloVe, with fast.ai's recipe for the rest.

Row 0 (padding) is zero; vocabulary words found in GloVe get their vector; the others and the
rare-word row get normal(0, oov_scale) draws; the whole matrix is then divided by `divide_by`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, save_npy, write_json
from stages.glove import params as glove_params
from stages.glove.download import RAW_DIR, vectors_file
from stages.glove.params import MatrixParams

VOCAB = "data/imdb/tokenized/vocab.csv"
OUT_DIR = "data/glove/matrix"


def read_glove(path: str | Path, dim: int, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """(words, float32 vectors) of a GloVe text file, in file order (most frequent first); `limit`: first lines only.

    A line that is not a word followed by `dim` finite floats is an error naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: missing; glove_download extracts glove.6B.<dim>d.txt for glove.dim = {dim} "
                         "(the archive holds 50, 100, 200 and 300)")
    words, rows = [], []
    number = 0
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            for number, line in enumerate(f, start=1):
                if limit is not None and number > limit:
                    break
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if len(parts) != dim + 1:
                    raise StageError(f"{path}, line {number}: expected a word and {dim} floats, got "
                                     f"{len(parts) - 1} value(s) after '{parts[0][:40]}'; the file is corrupt "
                                     "or glove.dim is wrong")
                words.append(parts[0])
                rows.append(parts[1:])
    except UnicodeDecodeError as err:
        raise StageError(f"{path}, line {number + 1}: not UTF-8 ({err.reason}); the file is corrupt") from None
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, reported below with its line
            vectors = np.asarray(rows, dtype="float32")
    except ValueError as err:
        raise StageError(f"{path}: a value is not a float ({err}); the file is corrupt") from None
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):  # nan/inf would reach training as nan losses
        raise StageError(f"{path}, line {bad[0] + 1}: '{words[bad[0]][:40]}' has a value that is nan, inf or beyond "
                         f"float32's range ({len(bad)} such line(s)); the file is corrupt")
    return words, vectors


def embedding_matrix(vocab: list[str], glove_words: list[str], glove_vectors: np.ndarray,
                     p: MatrixParams) -> tuple[np.ndarray, np.ndarray]:
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


def main() -> None:
    p = glove_params.load()
    vocab = pd.read_csv(VOCAB, keep_default_na=False)["word"].astype(str).tolist()
    words, vectors = read_glove(Path(RAW_DIR) / vectors_file(p.dim), p.dim)
    matrix, found = embedding_matrix(vocab, words, vectors, p.matrix)
    coverage = float(found[1:len(vocab) + 1].mean())
    missing = [w for w, hit in zip(vocab, found[1:]) if not hit]
    with atomic_dir(OUT_DIR) as out:
        save_npy(out / "embedding.npy", matrix)
        save_npy(out / "in_glove.npy", found)
        write_json(out / "coverage.json", {"vocabulary_words": len(vocab), "in_glove": int(found.sum()),
                                           "coverage": coverage, "missing_examples": missing[:50]})
    print(f"GloVe {p.dim}d covers {found.sum():,} of {len(vocab):,} vocabulary words ({coverage:.1%}); "
          f"missing e.g.: {', '.join(missing[:8])}")


if __name__ == "__main__":
    run_stage(main)
