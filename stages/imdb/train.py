"""imdb_train@<model>: fit one model from params.yaml imdb.models.<model>, choosing the epoch on the validation split.

Training runs in phases; each phase sets the embedding's trainable flag, recompiles (so the flag takes
effect, with a fresh Adam at the phase's learning rate) and continues from the previous phase's weights.
The weights of the best validation epoch across all phases are kept. The test set is not read here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_path, load_npy, write_json
from stages.common.params import pick_model
from stages.common.training import history_rows, save_training_outputs, seed_everything
from stages.glove.paths import EMBEDDING as GLOVE_MATRIX
from stages.imdb import params as imdb_params
from stages.imdb import paths
from stages.imdb.params import ModelParams, NbsvmParams, Phase
from stages.imdb.paths import ARCHIVE, TOKENIZED
from stages.imdb.reviews import read_reviews
from stages.imdb.sequences import load_arrays


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
    """The callbacks train() runs in `phase`: the phase log, the best-weights keeper (if any), then
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


def require_learned(model, valid_x: np.ndarray, p: ModelParams) -> None:
    """Refuses a model that gives every validation review the same score, whatever its words. Measured cause: all
    the ReLU units died early in training (multi_cnn with seed 48 sat at val_loss ln 2 = 0.6931 for all 6 epochs),
    and no later epoch or phase revives them."""
    scores = model.predict(valid_x, batch_size=512, verbose=0)
    if np.ptp(scores) == 0:
        raise StageError(
            f"the {p.kind} model (seed {p.seed}) did not learn: it scores every validation review "
            f"{float(scores.flat[0]):.4f} (e.g. all its ReLU units died early in training); set another "
            "seed or a lower first learning rate under imdb.models"
        )


def train(
    train_data,
    valid_data,
    p: ModelParams,
    vocab_size: int,
    glove: np.ndarray | None = None,
    extra_callbacks=(),
    verbose: int = 2,
    backup: Path | None = None,
):
    """Pure step: (model with the best validation weights, history dict, summary dict).

    valid_data None: no choice to make, every phase is trained and the last weights are kept. `backup`: a folder
    where each epoch is backed up (PhaseBackup), and from which a killed training resumes."""
    import keras

    from stages.imdb.models import build

    if p.embedding == "glove":
        if glove is None or glove.shape != (vocab_size, p.embedding_dim):
            raise StageError(
                f"embedding 'glove' needs a {vocab_size} x {p.embedding_dim} matrix, got "
                f"{None if glove is None else glove.shape}: set embedding_dim to glove.dim and re-run "
                "glove_matrix after changing the vocabulary"
            )
    seed_everything(p.seed)
    model = build(p, vocab_size, train_data[0].shape[1], glove if p.embedding == "glove" else None)
    best = KeepBest(p.monitor) if valid_data is not None else None
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
    for number, phase in enumerate(p.phases, start=1):
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
            batch_size=p.batch_size,
            initial_epoch=first,
            epochs=epoch,
            validation_data=valid_data,
            verbose=verbose,
            callbacks=[epoch_timer(seconds), *epoch_end_callbacks(number, best, extra_callbacks), *saver],
        )
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(values)
    summary = {
        "epochs": epoch,
        "train_reviews_per_s": len(train_data[1]) * epoch / seconds[0],
        "train_seconds": seconds[0],
    }
    if best is None:
        return model, history, summary
    if best.weights is None:
        raise StageError(f"{p.monitor} was never finite (diverged?): lower the learning rates in imdb.models")
    model.set_weights(best.weights)
    require_learned(model, valid_data[0], p)
    summary = {
        "best_epoch": best.epoch,
        f"best_{p.monitor}": best.sign * best.best,
        "best_val_accuracy": history["val_accuracy"][best.epoch - 1],
        "best_val_loss": history["val_loss"][best.epoch - 1],
        **summary,
    }
    return model, history, summary


def refit(
    train_data,
    valid_data,
    p: ModelParams,
    epochs: int,
    vocab_size: int,
    glove: np.ndarray | None = None,
    extra_callbacks=(),
    verbose: int = 2,
    backup: Path | None = None,
):
    """Pure step: the model trained again from p.seed on the training and validation reviews together through the
    first `epochs` epochs of its phases, the number the validation split chose; (model, summary)."""
    all_data = tuple(np.concatenate(pair) for pair in zip(train_data, valid_data))
    model, _, summary = train(
        all_data,
        None,
        p.model_copy(update={"phases": phases_until(p.phases, epochs)}),
        vocab_size,
        glove,
        extra_callbacks,
        verbose,
        backup,
    )
    require_learned(model, valid_data[0], p)
    return model, {
        "refit_reviews": len(all_data[1]),
        "refit_epochs": summary["epochs"],
        "refit_seconds": summary["train_seconds"],
    }


def labelled_reviews() -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """The training reviews as text, split as imdb_tokenize split them: ((texts, labels) to train, to validate)."""
    texts, labels, _ = read_reviews(ARCHIVE)["train"]
    valid, tokenized_labels = load_npy(f"{TOKENIZED}/valid.npy"), load_npy(f"{TOKENIZED}/train_y.npy")
    if len(labels) != len(valid) or not np.array_equal(labels, tokenized_labels):
        raise StageError(f"{ARCHIVE} and {TOKENIZED} hold different training reviews: run imdb_tokenize again")
    rows = np.flatnonzero(~valid), np.flatnonzero(valid)
    return tuple(([texts[i] for i in part], labels[part].astype(np.float32)) for part in rows)


def main_nbsvm(name: str, mp: NbsvmParams) -> None:
    from stages.common.resume import dvc_hashes
    from stages.common.tracking import stage_run
    from stages.imdb import nbsvm

    train_reviews, valid_reviews = labelled_reviews()
    with stage_run("imdb", f"imdb_train@{name}", params={"model": name, **mp.model_dump()}, inputs=[ARCHIVE]) as run:
        reviews = pd.DataFrame({"review": train_reviews[0], "label": train_reviews[1]})
        run.log_dataset(reviews, "imdb-train-reviews", ARCHIVE, dvc_hashes([ARCHIVE])[ARCHIVE])
        started = time.perf_counter()
        model, history, summary = nbsvm.train(train_reviews, valid_reviews, mp)
        summary["train_seconds"] = time.perf_counter() - started
        for row in history_rows(history):  # each C tried is a step, counted from 1 as epochs are
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        save_training_outputs(
            run,
            paths,
            name,
            model,
            history,
            summary,
            f"IMDB {name}: validation accuracy per C tried",
            ["val_accuracy"],
            serving_code="stages/imdb/nbsvm_serving.py",
        )
    print(
        f"{name}: C = {summary['chosen_C']} chosen on validation (accuracy {summary['best_val_accuracy']:.4f}), "
        f"{summary['n_ngrams']:,} n-grams, {summary['train_seconds']:.0f} s"
    )


def main(name: str) -> None:
    from stages.common.resume import backup_folder, dvc_hashes, remove_backup
    from stages.common.tracking import stage_run

    p = imdb_params.load()
    mp = pick_model(p.models, name, "imdb.models")
    if mp.kind == "nbsvm":
        main_nbsvm(name, mp)
        return
    train_data = load_arrays(split="train", maxlen=mp.maxlen)
    valid_data = load_arrays(split="valid", maxlen=mp.maxlen)
    glove = load_npy(GLOVE_MATRIX) if mp.embedding == "glove" else None
    inputs = [TOKENIZED] + ([GLOVE_MATRIX] if glove is not None else [])
    with stage_run("imdb", f"imdb_train@{name}", params={"model": name, **mp.model_dump()}, inputs=inputs) as run:
        # kept until the outputs are written: a kill during the refit does not redo the first training
        hashes = dvc_hashes(inputs)
        run.log_dataset(train_data[0], "imdb-train", TOKENIZED, hashes[TOKENIZED], targets=train_data[1])
        folder = backup_folder(f"imdb_train@{name}", {"params": mp.model_dump(), "data": hashes})
        model, history, summary = train(
            train_data,
            valid_data,
            mp,
            p.tokenize.vocab_size,
            glove,
            extra_callbacks=[run.keras_callback()],
            backup=folder / "train",
        )
        if mp.refit:
            print(f"{name}: validation chose epoch {summary['best_epoch']}; training again on every training review")
            model, refitted = refit(
                train_data, valid_data, mp, summary["best_epoch"], p.tokenize.vocab_size, glove, backup=folder / "refit"
            )
            summary |= refitted
        save_training_outputs(
            run, paths, name, model, history, summary, f"IMDB {name}: accuracy per epoch", ["accuracy", "val_accuracy"]
        )
        remove_backup(folder)
    print(
        f"{name}: best val accuracy {summary['best_val_accuracy']:.4f} at epoch {summary['best_epoch']} "
        f"of {summary['epochs']}, {summary['train_reviews_per_s']:,.0f} reviews/s"
    )


if __name__ == "__main__":
    run_stage(main, sys.argv[1])
