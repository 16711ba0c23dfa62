"""Training in phases, resumable: each phase sets the embedding's trainable flag, recompiles (so the flag takes
effect, with a fresh Adam at the phase's learning rate) and continues from the previous phase's weights; the
weights of the best validation epoch across all phases are kept.

Not on the shared stages.common.training.resume_callbacks: Keras' BackupAndRestore backs up one fit() and deletes
it when that fit ends, best weights not included; a phase is a fit of its own, so a kill in phase 2 would redo 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from stages.common.io import atomic_path, write_json
from stages.imdb.params import Phase


class KeepBest:
    """Remembers the weights of the best epoch by `monitor`, across fit() calls."""

    def __init__(self, monitor: str):
        self.monitor, self.sign = monitor, (1 if monitor.endswith("accuracy") else -1)
        self.best, self.epoch, self.weights = -np.inf, 0, None

    def callback(self):
        import keras

        keeper = self

        class Keep(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                score = keeper.sign * logs[keeper.monitor]
                if score > keeper.best:
                    keeper.best, keeper.epoch, keeper.weights = score, epoch + 1, self.model.get_weights()

        return Keep()


class PhaseBackup:
    """After every epoch, in `folder`: the model's and the optimizer's variables, the best epoch's weights and the
    history so far, so that a killed training resumes inside the right phase (recompiled with its trainable flag,
    its optimizer state put back) after its last finished epoch. A phase's first epoch starts, as in an
    uninterrupted run, with a fresh optimizer."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.state_file, self.arrays = folder / "state.json", folder / "arrays.npz"

    def load(self) -> dict | None:
        if not (self.state_file.is_file() and self.arrays.is_file()):
            return None
        state = json.loads(self.state_file.read_text())
        with np.load(self.arrays, allow_pickle=False) as arrays:
            state["arrays"] = {key: arrays[key] for key in arrays.files}
        return state if state["arrays"]["epoch"].item() == state["epoch"] else None  # else killed between the two

    def callback(self, best: KeepBest | None, history: dict[str, list[float]], seconds: list[float]):
        """Saves each epoch's end; `history`: the epochs before this fit, `seconds`: [training seconds so far]."""
        import keras

        backup = self

        class Save(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.rows = {key: list(values) for key, values in history.items()}

            def on_epoch_end(self, epoch, logs=None):
                for key, value in logs.items():
                    self.rows.setdefault(key, []).append(float(value))
                arrays = {f"model_{i}": w for i, w in enumerate(self.model.get_weights())}
                arrays |= {f"optimizer_{i}": v.numpy() for i, v in enumerate(self.model.optimizer.variables)}
                if best is not None and best.weights is not None:
                    arrays |= {f"best_{i}": w for i, w in enumerate(best.weights)}
                arrays["epoch"] = np.array(epoch + 1)  # pairs the arrays with state.json
                backup.folder.mkdir(parents=True, exist_ok=True)
                with atomic_path(backup.arrays) as tmp, open(tmp, "wb") as f:
                    np.savez(f, **arrays)
                state = {
                    "epoch": epoch + 1,
                    "history": self.rows,
                    "seconds": seconds[0],
                    "best": None if best is None else [best.best, best.epoch],
                }
                write_json(backup.state_file, state)

        return Save()


def epoch_timer(seconds: list[float]):
    """Adds each epoch's seconds (training and validation) to seconds[0]."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds[0] += time.perf_counter() - self.started

    return Timer()


def phase_logger(phase: int):
    """Adds the phase number, the optimizer's actual learning rate and the embedding's trainability to the epoch
    logs."""
    import keras

    class Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["phase"] = phase
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
            logs["embedding_trainable"] = float(self.model.get_layer("embedding").trainable)

    return Log()


def epoch_end_callbacks(phase: int, best: KeepBest | None, extra_callbacks=()) -> list:
    """The callbacks fit_phases() runs in `phase`: the phase log, the best-weights keeper (if any), then
    `extra_callbacks`."""
    return [phase_logger(phase), *([best.callback()] if best else []), *extra_callbacks]


def phases_until(phases: list[Phase], epochs: int) -> list[Phase]:
    """The first `epochs` epochs of `phases`, as phases (the last one shortened)."""
    kept, left = [], epochs
    for phase in phases:
        if left <= 0:
            break
        kept.append(phase.model_copy(update={"epochs": min(phase.epochs, left)}))
        left -= phase.epochs
    return kept


def fit_phases(
    model,
    train_data,
    valid_data,
    phases: list[Phase],
    batch_size: int,
    best: KeepBest | None,
    extra_callbacks=(),
    verbose: int = 2,
    backup: Path | None = None,
) -> tuple[dict[str, list[float]], float]:
    """Fits `model` (its layer `embedding` frozen or not as each phase says) through `phases`; (history of every
    epoch, training seconds). `best` (None: no validation) follows the best epoch; `backup`: a folder where each
    epoch is backed up (PhaseBackup), and from which a killed training resumes."""
    import keras

    history: dict[str, list[float]] = {}
    epoch, seconds = 0, [0.0]
    phase_backup = PhaseBackup(backup) if backup else None
    resumed = phase_backup.load() if phase_backup else None
    if resumed:
        print(f"{backup}: resuming after epoch {resumed['epoch']} (the previous run was interrupted)", flush=True)
        history, seconds = resumed["history"], [resumed["seconds"]]
        arrays = resumed["arrays"]
        model.set_weights([arrays[f"model_{i}"] for i in range(len(model.weights))])
        if best is not None and resumed["best"] is not None:
            best.best, best.epoch = resumed["best"]
            best.weights = [arrays[f"best_{i}"] for i in range(len(model.weights))]
    for number, phase in enumerate(phases, start=1):
        phase_start, epoch = epoch, epoch + phase.epochs
        if resumed and resumed["epoch"] >= epoch:
            continue  # finished before the kill
        model.get_layer("embedding").trainable = phase.train_embedding
        # compile after changing `trainable`, with a new optimizer at this phase's rate: both really apply
        model.compile(
            optimizer=keras.optimizers.Adam(phase.learning_rate), loss="binary_crossentropy", metrics=["accuracy"]
        )
        first = phase_start
        if resumed and resumed["epoch"] > phase_start:  # killed inside this phase: its optimizer state goes back
            first = resumed["epoch"]
            model.optimizer.build(model.trainable_variables)
            for i, variable in enumerate(model.optimizer.variables):
                variable.assign(resumed["arrays"][f"optimizer_{i}"])
        saver = [phase_backup.callback(best, history, seconds)] if phase_backup else []
        fitted = model.fit(
            *train_data,
            batch_size=batch_size,
            initial_epoch=first,
            epochs=epoch,
            validation_data=valid_data,
            verbose=verbose,
            callbacks=[epoch_timer(seconds), *epoch_end_callbacks(number, best, extra_callbacks), *saver],
        )
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(values)
    return history, seconds[0]
