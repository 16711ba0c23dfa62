"""imdb_nbsvm_train: the NB-SVM model (stages/imdb/nbsvm.py), trained in a stage of its own: it reads the training
reviews' text and imdb_tokenize's validation split, neither the token ids nor GloVe. Params: imdb.nbsvm; the
model's name in data/imdb: `nbsvm`. C is chosen on the validation split; the test set is not read here.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from stages.common.cli import StageError, run_stage
from stages.common.io import load_npy
from stages.imdb import params as imdb_params
from stages.imdb import paths
from stages.imdb.paths import ARCHIVE, NBSVM, TOKENIZED, TRAIN_LABELS, VALID_MASK
from stages.imdb.reviews import read_reviews


def labelled_reviews() -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """The training reviews as text, split as imdb_tokenize split them: ((texts, labels) to train, to validate)."""
    texts, labels, _ = read_reviews(ARCHIVE)["train"]
    valid, tokenized_labels = load_npy(VALID_MASK), load_npy(TRAIN_LABELS)
    if len(labels) != len(valid) or not np.array_equal(labels, tokenized_labels):
        raise StageError(f"{ARCHIVE} and {TOKENIZED} hold different training reviews: run imdb_tokenize again")
    rows = np.flatnonzero(~valid), np.flatnonzero(valid)
    return tuple(([texts[i] for i in part], labels[part].astype(np.float32)) for part in rows)


def main() -> None:
    from stages.common.resume import dvc_hashes
    from stages.common.tracking import stage_run
    from stages.common.training import history_rows, save_training_outputs
    from stages.imdb import nbsvm

    p = imdb_params.load().nbsvm
    train_reviews, valid_reviews = labelled_reviews()
    logged = {"model": NBSVM, "kind": "nbsvm", **p.model_dump()}
    with stage_run("imdb", "imdb_nbsvm_train", params=logged, inputs=[ARCHIVE]) as run:
        reviews = pd.DataFrame({"review": train_reviews[0], "label": train_reviews[1]})
        run.log_dataset(reviews, "imdb-train-reviews", ARCHIVE, dvc_hashes([ARCHIVE])[ARCHIVE])
        started = time.perf_counter()
        model, history, summary = nbsvm.train(train_reviews, valid_reviews, p)
        summary["train_seconds"] = time.perf_counter() - started
        for row in history_rows(history):  # each C tried is a step, counted from 1 as epochs are
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        save_training_outputs(
            run,
            paths,
            NBSVM,
            model,
            history,
            summary,
            f"IMDB {NBSVM}: validation accuracy per C tried",
            ["val_accuracy"],
            serving_code="stages/imdb/nbsvm_serving.py",
        )
    print(
        f"{NBSVM}: C = {summary['chosen_C']} chosen on validation (accuracy {summary['best_val_accuracy']:.4f}), "
        f"{summary['n_ngrams']:,} n-grams, {summary['train_seconds']:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
