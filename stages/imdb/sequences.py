"""Padded id sequences: Keras' pad_sequences semantics, and the tokenized arrays read back for training and test."""

from __future__ import annotations

import numpy as np

from stages.common.cli import StageError
from stages.common.io import load_npy, read_json
from stages.imdb.paths import TOKENIZED


def pad(sequences, maxlen: int, padding: str = "pre", truncating: str = "pre") -> np.ndarray:
    """Keras' pad_sequences semantics (0 is padding) without importing Keras."""
    if maxlen <= 0:
        raise StageError(f"maxlen must be > 0, got {maxlen}")
    out = np.zeros((len(sequences), maxlen), dtype="int32")
    for row, ids in enumerate(sequences):
        ids = ids[-maxlen:] if truncating == "pre" else ids[:maxlen]
        if len(ids):
            if padding == "pre":
                out[row, maxlen - len(ids) :] = ids
            else:
                out[row, : len(ids)] = ids
    return out


def repad(x: np.ndarray, maxlen: int, padding: str, truncating: str) -> np.ndarray:
    """Re-truncate padded rows to a shorter (or longer) maxlen with the same semantics."""
    if maxlen == x.shape[1]:
        return x
    return pad([row[row != 0] for row in x], maxlen, padding, truncating)


def load_arrays(
    folder: str = TOKENIZED, split: str = "train", maxlen: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 labels) of `split`: 'train' (training rows only), 'valid' or 'test', re-padded to `maxlen`."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', not {split!r}")
    stats = read_json(f"{folder}/stats.json")
    prefix = "test" if split == "test" else "train"
    x, y = load_npy(f"{folder}/{prefix}_x.npy"), load_npy(f"{folder}/{prefix}_y.npy").astype("float32")
    if split != "test":
        rows = load_npy(f"{folder}/valid.npy") == (split == "valid")
        x, y = x[rows], y[rows]
    if maxlen:
        x = repad(x, maxlen, stats["padding"], stats["truncating"])
    return x, y
