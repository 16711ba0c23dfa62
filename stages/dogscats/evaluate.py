"""dogscats_evaluate: validation accuracy, Kaggle's clipped log loss, confusion matrix, the most confidently wrong
images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.cli import run_stage
from stages.common.io import atomic_dir, load_keras, save_figure, write_csv, write_json
from stages.dogscats import params as dogscats_params
from stages.dogscats.feature_files import load_features, load_flipped, split_arrays
from stages.dogscats.params import MODELS
from stages.dogscats.paths import EVALUATE_METRICS, EVALUATION, FEATURES, FLIPPED_FEATURES, MODEL, PREPARED
from stages.dogscats.scoring import flip_averaged_scores, scores


def confidently_wrong(index: pd.DataFrame, labels: np.ndarray, p_dog: np.ndarray, n: int) -> pd.DataFrame:
    """The n misclassified validation images with the most confident wrong predictions."""
    table = index.assign(p_dog=p_dog, wrong_confidence=np.abs(p_dog - 0.5) * 2)
    wrong = table[(p_dog > 0.5).astype(int) != labels.astype(int)]
    return wrong.sort_values("wrong_confidence", ascending=False).head(n)


def gallery(wrong: pd.DataFrame, image_dir: Path, classes: list[str], title: str):
    import matplotlib.pyplot as plt
    from PIL import Image

    cols = min(5, max(1, len(wrong)))
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, wrong.itertuples()):
        with Image.open(image_dir / row.path) as img:
            ax.imshow(img.convert("RGB"))
        ax.set_title(f"{classes[row.label]}, P(dog)={row.p_dog:.3f}\n{row.source}", fontsize=8)
    if wrong.empty:
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(title)
    return fig


def main() -> None:
    import stages.common.batchnorm  # noqa: F401  registers CalibratedBatchNormalization for loading
    from stages.common.plots import close, confusion_matrix_figure
    from stages.common.tracking import stage_run

    p = dogscats_params.load()
    features, index = load_features(FEATURES)
    valid_x, labels = split_arrays(features, index, "valid")
    valid_index = index[index["split"] == "valid"].reset_index(drop=True)
    classes = [c for _, c in sorted(set(zip(index["label"], index["class"])))]
    # the features stage wrote the mirrored images' features when dogscats.features.flips is on
    flipped_x = load_flipped(FEATURES, index, "valid")[0] if (Path(FEATURES) / FLIPPED_FEATURES).exists() else None
    results, predictions = {}, {}
    for name in MODELS:
        model = load_keras(MODEL.format(name=name))
        predictions[name] = model.predict(valid_x, verbose=0).reshape(-1)
        results[name] = scores(labels, predictions[name], p.evaluate.log_loss_clip)
        if flipped_x is not None:
            flipped = model.predict(flipped_x, verbose=0).reshape(-1)
            results[name] |= flip_averaged_scores(labels, predictions[name], flipped, p.evaluate.log_loss_clip)
    shown = p.evaluate.gallery_model
    wrong = confidently_wrong(valid_index, labels, predictions[shown], p.evaluate.gallery_size)
    with atomic_dir(EVALUATION) as out:
        write_csv(
            out / "confusion.csv",
            pd.DataFrame(
                {
                    "actual": [classes[int(i)] for i in labels],
                    "predicted": [classes[int(i)] for i in predictions[shown] > 0.5],
                }
            ),
        )
        write_csv(out / "confidently_wrong.csv", wrong)
        fig = confusion_matrix_figure(np.array(results[shown]["confusion"]), classes, f"Dogs vs Cats, {shown}")
        save_figure(out / "confusion.png", fig)
        close(fig)
        fig = gallery(
            wrong,
            Path(PREPARED),
            classes,
            f"{shown}: the {len(wrong)} most confidently wrong of {len(labels)} validation images",
        )
        save_figure(out / "confidently_wrong.png", fig)
        close(fig)
    write_json(EVALUATE_METRICS, results)
    with stage_run("dogscats", "dogscats_evaluate", params=p.evaluate.model_dump(), inputs=[FEATURES]) as run:
        for name, metrics in results.items():  # each head's figures on its own row, under the same names
            figures = {k: v for k, v in metrics.items() if k != "confusion"}
            run.log_onto_training_run("dogscats", MODEL.format(name=name), figures)
            validation = ("val_accuracy", metrics["val_accuracy"])
            run.offer_champion(
                "dogscats",
                MODEL.format(name=name),
                validation,
                True,
                {"validation.val_log_loss": metrics["val_log_loss"]},
            )
        for path in sorted(Path(EVALUATION).iterdir()):
            run.log_artifact(path, "evaluation")
    for name, m in results.items():
        line = (
            f"{name}: val accuracy {m['val_accuracy']:.4f} ({m['errors']} wrong of {m['n_valid']}), "
            f"log loss {m['val_log_loss']:.4f}"
        )
        if flipped_x is not None:
            line += (
                f"; averaged with the mirrored image {m['flip_averaged_val_accuracy']:.4f} "
                f"({m['flip_averaged_errors']} wrong), log loss {m['flip_averaged_val_log_loss']:.4f}"
            )
        print(line)


if __name__ == "__main__":
    run_stage(main)
