"""Reading a GloVe text file: every line a word and `dim` finite floats, or an error naming the line. Shared: the
GloVe workload maps the vectors (glove_tsne), IMDB joins them with its vocabulary (imdb_glove_matrix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.common.cli import StageError


def read_glove(path: str | Path, dim: int | None, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """(words, float32 vectors) of a GloVe text file, in file order (most frequent first); `limit`: first lines only.

    A line that is not a word followed by `dim` finite floats is an error naming the file and line; `dim` None:
    as many as the first line holds.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(
            f"{path}: missing; glove_download extracts glove.6B.<dim>d.txt for glove.dim"
            f"{'' if dim is None else f' = {dim}'} (the archive holds 50, 100, 200 and 300)"
        )
    words, rows = [], []
    number, explicit = 0, dim is not None
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            for number, line in enumerate(f, start=1):
                if limit is not None and number > limit:
                    break
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if dim is None:
                    dim = len(parts) - 1
                if len(parts) != dim + 1:
                    raise StageError(
                        f"{path}, line {number}: expected a word and {dim} floats, got "
                        f"{len(parts) - 1} value(s) after '{parts[0][:40]}'; the file is corrupt"
                        + (" or glove.dim is wrong" if explicit else " (line 1 holds that many)")
                    )
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
        raise StageError(
            f"{path}, line {bad[0] + 1}: '{words[bad[0]][:40]}' has a value that is nan, inf or beyond "
            f"float32's range ({len(bad)} such line(s)); the file is corrupt"
        )
    return words, vectors
