"""Keras helpers shared by the training stages."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

from stages.common.io import atomic_path, save_figure, save_keras, write_csv, write_json, write_metrics
from stages.common.resume import backup_folder, remove_backup


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and TensorFlow; `deterministic` also makes TF ops bit-reproducible (slower)."""
    import keras
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


class LearningRateSchedule:
    """Per-epoch learning rates from params ([[first_epoch, lr], ...]), applied by Keras' LearningRateScheduler
    (which also logs each epoch's `learning_rate`). Keras 3 really changes the rate (the 2017 notebooks'
    `model.optimizer.lr = x` did not)."""

    def __init__(self, steps: list[tuple[int, float]]):
        self.steps = sorted(steps)

    def rate(self, epoch: int) -> float:
        current = self.steps[0][1]
        for first_epoch, lr in self.steps:
            if epoch >= first_epoch:
                current = lr
        return float(current)

    def callback(self):
        import keras

        return keras.callbacks.LearningRateScheduler(self.rate)


def history_rows(history: dict[str, list[float]]) -> list[dict[str, float]]:
    """Keras History.history as one row per epoch (the shape `dvc plots` reads)."""
    epochs = len(next(iter(history.values()), []))
    return [{"epoch": i + 1, **{k: float(v[i]) for k, v in history.items()}} for i in range(epochs)]


def resume_callbacks(stage: str, fingerprint: Mapping[str, Any] | None = None) -> list:
    """Callbacks that let a killed `fit` (SIGKILL, OOM, power loss) resume at its last finished epoch.

    Keras' BackupAndRestore keeps the weights, the optimizer state and the epoch count in
    `.cache/backup/<stage>/<digest of fingerprint>/` after every epoch and deletes them when `fit` ends; the
    epochs' logs are kept beside them, so a resumed `fit` returns the whole run's history. `fingerprint`
    (the stage's params, its input hashes) keys the backup: a backup made with other settings is discarded,
    never resumed. On resume, EarlyStopping's patience count and best weights start afresh.
    """
    import keras

    folder = backup_folder(stage, fingerprint or {})

    class EpochLogs(keras.callbacks.Callback):
        """Keeps finished epochs' logs with the backup and puts them back in front of a resumed run's history."""

        def on_train_begin(self, logs=None):
            start = self.model._initial_epoch or 0  # set by BackupAndRestore, which runs just before
            if start >= self.params["epochs"]:  # killed after the last backup: redo the last epoch, not none
                start = self.model._initial_epoch = self.params["epochs"] - 1
            saved = json.loads(logs_file.read_text()) if start and logs_file.is_file() else []
            self.rows, self.resumed_at = saved[:start], start
            if start:
                print(
                    f"{stage}: resuming after epoch {start} from the backup in {folder} "
                    "(the previous run was interrupted)",
                    flush=True,
                )

        def on_epoch_end(self, epoch, logs=None):
            self.rows.append({k: float(v) for k, v in (logs or {}).items()})
            if folder.is_dir():  # BackupAndRestore has just written this epoch's backup
                write_json(logs_file, self.rows)

        def on_train_end(self, logs=None):
            history = getattr(self.model, "history", None)
            if self.resumed_at and history is not None:
                earlier = self.rows[: self.resumed_at]
                for key, values in history.history.items():
                    history.history[key] = [row.get(key, float("nan")) for row in earlier] + values
            remove_backup(folder)

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        """Keras' backup written via temporary files and renamed into place, so a kill mid-write leaves the
        previous epoch's backup whole; a backup that still cannot be read is discarded with a warning (the run
        starts afresh) instead of failing every rerun."""

        def _save_model(self):
            with atomic_path(self._weights_path) as weights:
                self.model.save_weights(str(weights), overwrite=True)
            write_json(self._training_metadata_path, {"epoch": self._current_epoch, "batch": self._last_batch_seen})

        def on_train_begin(self, logs=None):
            try:
                super().on_train_begin(logs)
            except (OSError, json.JSONDecodeError, KeyError) as error:
                print(
                    f"WARNING: {stage}: the backup in {folder} is unreadable ({error}); it is discarded and "
                    "training starts from epoch 1",
                    flush=True,
                )
                shutil.rmtree(folder, ignore_errors=True)
                self.model._initial_epoch = None

    logs_file = folder / "epoch_logs.json"
    return [AtomicBackupAndRestore(str(folder)), EpochLogs()]


def save_training_outputs(
    run,
    paths,
    name: str,
    model,
    history: dict[str, list[float]],
    summary: dict,
    curve_title: str,
    curve_metrics: list[str],
    serving_code: str | None = None,
) -> None:
    """A train stage's DVC outputs (model, per-epoch CSV, summary JSON, its timings apart, curves PNG), also logged
    to MLflow; `paths`: the workload's paths module (MODEL, HISTORY, TRAIN_METRICS, TRAIN_TIMINGS, CURVES).
    `serving_code`: log the model as that pyfunc code (a model of raw text) instead of Keras' MLflow flavour."""
    import pandas as pd

    from stages.common.plots import close, training_curves

    rows = history_rows(history)
    save_keras(paths.MODEL.format(name=name), model)
    write_csv(paths.HISTORY.format(name=name), pd.DataFrame(rows))
    write_metrics(paths.TRAIN_METRICS.format(name=name), paths.TRAIN_TIMINGS.format(name=name), summary)
    curves = paths.CURVES.format(name=name)
    fig = training_curves(rows, curve_title, curve_metrics)
    save_figure(curves, fig)
    step = summary.get("best_epoch") or len(rows)  # the epoch whose weights the model holds
    run.log_training(rows, summary, step)
    close(fig)
    run.log_artifact_as(curves, "plots/curves.png")  # one artifact name in every run: the compare view lines them up
    if serving_code:
        run.log_text_model(paths.MODEL.format(name=name), serving_code, name, step)
    else:
        run.log_keras_model(model, name, step, paths.MODEL.format(name=name))
