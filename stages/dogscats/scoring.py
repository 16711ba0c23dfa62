"""How a head's predictions on held-out images are scored (dogscats_evaluate, dogscats_finetune)."""

from __future__ import annotations

import numpy as np


def log_loss(labels: np.ndarray, p_dog: np.ndarray, clip: float) -> float:
    """Kaggle's Dogs vs Cats score: mean binary cross-entropy with probabilities clipped to [clip, 1 - clip]."""
    p = np.clip(p_dog.astype(np.float64), clip, 1 - clip)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def scores(labels: np.ndarray, p_dog: np.ndarray, clip: float) -> dict:
    predicted = (p_dog > 0.5).astype(int)
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (labels.astype(int), predicted), 1)
    return {
        "val_accuracy": float(np.mean(predicted == labels)),
        "val_log_loss": log_loss(labels, p_dog, clip),
        "n_valid": int(len(labels)),
        "errors": int(np.sum(predicted != labels)),
        "confusion": matrix.tolist(),
    }


def flip_averaged_scores(labels: np.ndarray, p_dog: np.ndarray, p_dog_flipped: np.ndarray, clip: float) -> dict:
    """Scores of the prediction averaged with that of the image mirrored left-right (test-time augmentation)."""
    averaged = scores(labels, (p_dog + p_dog_flipped) / 2, clip)
    return {f"flip_averaged_{k}": averaged[k] for k in ("val_accuracy", "val_log_loss", "errors")}
