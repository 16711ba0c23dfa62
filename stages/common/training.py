"""Keras helpers shared by the training stages."""
from __future__ import annotations

import os


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and TensorFlow; `deterministic` also makes TF ops bit-reproducible (slower)."""
    import keras
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


class LearningRateSchedule:
    """Per-epoch learning rates from params ([[first_epoch, lr], ...]) applied by assigning the optimizer's rate.

    Keras 3 really changes the rate on `assign` (the 2017 notebooks' `model.optimizer.lr = x` did not).
    """

    def __init__(self, steps: list[tuple[int, float]]):
        self.steps = sorted(steps)

    def rate(self, epoch: int) -> float:
        current = self.steps[0][1]
        for first_epoch, lr in self.steps:
            if epoch >= first_epoch:
                current = lr
        return current

    def callback(self):
        import keras
        schedule = self

        class Assign(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.model.optimizer.learning_rate.assign(schedule.rate(epoch))

            def on_epoch_end(self, epoch, logs=None):
                if logs is not None:
                    logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())

        return Assign()


def history_rows(history: dict[str, list[float]]) -> list[dict[str, float]]:
    """Keras History.history as one row per epoch (the shape `dvc plots` reads)."""
    epochs = len(next(iter(history.values()), []))
    return [{"epoch": i + 1, **{k: float(v[i]) for k, v in history.items()}} for i in range(epochs)]
