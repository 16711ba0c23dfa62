"""imdb_evaluate@<model> (a Keras model: the tokenized test set) and imdb_nbsvm_evaluate (`nbsvm`: the test reviews'
text): the one look at the test set: accuracy, ROC AUC, log loss, confusion matrix, ROC curve."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, roc_auc_score, roc_curve

from stages.common.cli import run_stage
from stages.common.io import load_keras, read_json, save_figure, write_csv, write_json
from stages.common.tracking import stage_run
from stages.imdb.paths import (
    ARCHIVE,
    CONFUSION_PLOT,
    METRICS,
    MODEL,
    NBSVM,
    PREDICTIONS,
    ROC,
    ROC_PLOT,
    TOKENIZED,
    TRAIN_METRICS,
)
from stages.imdb.reviews import read_reviews
from stages.imdb.sequences import load_arrays

CLASSES = ["neg", "pos"]


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> tuple[dict, pd.DataFrame, np.ndarray]:
    """Pure step: (metrics, ROC curve table, 2x2 confusion matrix) of predicted P(positive)."""
    predicted = (probabilities >= 0.5).astype(int)
    matrix = confusion_matrix(labels, predicted, labels=[0, 1])
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    metrics = {
        "test_accuracy": float(accuracy_score(labels, predicted)),
        "test_roc_auc": float(roc_auc_score(labels, probabilities)),
        "test_log_loss": float(log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "confusion_matrix": {
            "tn": int(matrix[0, 0]),
            "fp": int(matrix[0, 1]),
            "fn": int(matrix[1, 0]),
            "tp": int(matrix[1, 1]),
        },
        "n_test": int(len(labels)),
    }
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1.0)})
    return metrics, roc, matrix


def roc_figure(roc: pd.DataFrame, auc: float, title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(roc["fpr"], roc["tpr"], label=f"AUC {auc:.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    return fig


def stage_name(name: str) -> str:
    """The dvc.yaml stage that evaluates model `name`: NB-SVM's own, or an item of the Keras models' foreach."""
    return "imdb_nbsvm_evaluate" if name == NBSVM else f"imdb_evaluate@{name}"


def test_inputs(model) -> tuple[np.ndarray, np.ndarray, str]:
    """The test reviews as the model reads them: raw text (NB-SVM) or the tokenized ids; their labels; where from."""
    if model.inputs[0].dtype == "string":
        texts, labels, _ = read_reviews(ARCHIVE)["test"]
        return np.array(texts, dtype=object), labels.astype(np.float32), ARCHIVE
    return *load_arrays(split="test", maxlen=model.input_shape[1]), TOKENIZED


def main(name: str) -> None:
    import stages.imdb.models  # noqa: F401  registers the custom embedding layer for loading
    import stages.imdb.nbsvm  # noqa: F401  registers NB-SVM's text standardisation for loading
    from stages.common.plots import close, confusion_matrix_figure

    model_path = MODEL.format(name=name)
    model = load_keras(model_path)
    x, y, source = test_inputs(model)
    probabilities = model.predict(x, batch_size=512, verbose=0).reshape(-1)
    metrics, roc, matrix = evaluate(probabilities, y.astype(int))
    write_json(METRICS.format(name=name), metrics)
    write_csv(ROC.format(name=name), roc)
    write_csv(
        PREDICTIONS.format(name=name),
        pd.DataFrame(
            {
                "actual": np.array(CLASSES)[y.astype(int)],
                "predicted": np.array(CLASSES)[(probabilities >= 0.5).astype(int)],
            }
        ),
    )
    figures = {
        CONFUSION_PLOT.format(name=name): confusion_matrix_figure(matrix, CLASSES, f"IMDB {name}: test set"),
        ROC_PLOT.format(name=name): roc_figure(roc, metrics["test_roc_auc"], f"IMDB {name}: test ROC"),
    }
    for path, fig in figures.items():
        save_figure(path, fig)
        close(fig)
    with stage_run("imdb", stage_name(name), params={"model": name}, inputs=[source, model_path]) as run:
        figures = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        figures |= {f"test_{k}": v for k, v in metrics["confusion_matrix"].items()}
        artifacts = {
            "plots/confusion.png": CONFUSION_PLOT.format(name=name),
            "plots/roc.png": ROC_PLOT.format(name=name),
            "eval/roc.csv": ROC.format(name=name),
        }
        run.log_metrics(figures)
        for artifact_file, path in artifacts.items():
            run.log_artifact_as(path, artifact_file)
        validation = read_json(TRAIN_METRICS.format(name=name))["best_val_accuracy"]  # chosen on it; test read once
        tests = {f"test.{k}": metrics[f"test_{k}"] for k in ("accuracy", "roc_auc", "log_loss")}
        run.log_onto_training_run("imdb", model_path, figures, artifacts)
        run.offer_champion("imdb", model_path, ("val_accuracy", validation), True, tests)
    print(
        f"{name}: test accuracy {metrics['test_accuracy']:.4f}, ROC AUC {metrics['test_roc_auc']:.4f}, "
        f"log loss {metrics['test_log_loss']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main, sys.argv[1])
