"""Reading the cached VGG16 features (dogscats_features' output) for the heads' training and evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages.common.io import load_npy, read_json
from stages.dogscats.paths import FEATURES_INFO, FLIPPED_FEATURES, PHOTO_FEATURES


def load_features(features_dir: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Cached features (float16, memory-mapped) and their manifest rows, in the same order."""
    return load_npy(f"{features_dir}/{PHOTO_FEATURES}", mmap=True), pd.read_csv(f"{features_dir}/index.csv")


def split_arrays(features: np.ndarray, index: pd.DataFrame, split: str) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(index["split"].to_numpy() == split)
    return np.asarray(features[rows], dtype=np.float32), index["label"].to_numpy("float32")[rows]


def load_flipped(features_dir: str, index: pd.DataFrame, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's features of the images mirrored left-right (written with dogscats.features.flips)."""
    return split_arrays(load_npy(f"{features_dir}/{FLIPPED_FEATURES}", mmap=True), index, split)


def features_precision(features_dir: str) -> str:
    """The Keras dtype policy VGG16 computed the cached features in (dogscats.features.precision resolved)."""
    return read_json(f"{features_dir}/{FEATURES_INFO}")["precision"]
