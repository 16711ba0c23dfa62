"""imdb_train@<model>: fit one Keras model from params.yaml imdb.models.<model>, choosing the epoch on the
validation split.

Training runs in phases (stages/imdb/phases.py: each recompiles with its trainable flag and a fresh Adam); the
weights of the best validation epoch across all phases are kept. The test set is not read here. NB-SVM trains in
a stage of its own (imdb_nbsvm_train: stages/imdb/nbsvm_train.py).
"""

from __future__ import annotations

import sys

import numpy as np

from stages.common.cli import StageError, run_stage
from stages.common.io import load_npy
from stages.common.params import pick_model
from stages.common.training import save_training_outputs, seed_everything
from stages.imdb import params as imdb_params
from stages.imdb import paths
from stages.imdb.params import ModelParams
from stages.imdb.paths import GLOVE, GLOVE_EMBEDDING, TOKENIZED
from stages.imdb.phases import KeepBest, fit_phases, phases_until
from stages.imdb.sequences import load_arrays


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


def train(train_data, valid_data, p: ModelParams, vocab_size: int, glove: np.ndarray | None = None, **fit):
    """Pure step: (model with the best validation weights, history dict, summary dict).

    valid_data None: no choice to make, every phase is trained and the last weights are kept. `fit`: fit_phases'
    extra_callbacks, verbose and backup (a folder from which a killed training resumes)."""
    from stages.imdb.models import build

    if p.embedding == "glove":
        if glove is None or glove.shape != (vocab_size, p.embedding_dim):
            raise StageError(
                f"embedding 'glove' needs a {vocab_size} x {p.embedding_dim} matrix, got "
                f"{None if glove is None else glove.shape}: set embedding_dim to glove.dim and re-run "
                "imdb_glove_matrix after changing the vocabulary"
            )
    seed_everything(p.seed)
    model = build(p, vocab_size, train_data[0].shape[1], glove if p.embedding == "glove" else None)
    best = KeepBest(p.monitor) if valid_data is not None else None
    history, seconds = fit_phases(model, train_data, valid_data, p.phases, p.batch_size, best, **fit)
    epochs = sum(phase.epochs for phase in p.phases)
    summary = {"epochs": epochs, "train_reviews_per_s": len(train_data[1]) * epochs / seconds, "train_seconds": seconds}
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


def refit(train_data, valid_data, p: ModelParams, epochs: int, vocab_size: int, glove=None, **fit):
    """Pure step: the model trained again from p.seed on the training and validation reviews together through the
    first `epochs` epochs of its phases, the number the validation split chose; (model, summary)."""
    all_data = tuple(np.concatenate(pair) for pair in zip(train_data, valid_data))
    phased = p.model_copy(update={"phases": phases_until(p.phases, epochs)})
    model, _, summary = train(all_data, None, phased, vocab_size, glove, **fit)
    require_learned(model, valid_data[0], p)
    return model, {
        "refit_reviews": len(all_data[1]),
        "refit_epochs": summary["epochs"],
        "refit_seconds": summary["train_seconds"],
    }


def main(name: str) -> None:
    from stages.common.resume import backup_folder, dvc_hashes, remove_backup
    from stages.common.tracking import stage_run

    p = imdb_params.load()
    mp = pick_model(p.models, name, "imdb.models")
    train_data = load_arrays(split="train", maxlen=mp.maxlen)
    valid_data = load_arrays(split="valid", maxlen=mp.maxlen)
    glove = load_npy(GLOVE_EMBEDDING) if mp.embedding == "glove" else None
    inputs = [TOKENIZED] + ([GLOVE] if glove is not None else [])
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
