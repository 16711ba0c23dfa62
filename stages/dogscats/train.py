"""dogscats_train: on the cached features, (1) the dense head, (2) the same head with BN inserted and fine-tuned,
(3) the BN head trained from scratch; each an MLflow run."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from stages.common.cli import run_stage
from stages.common.io import copy_file, load_keras, save_keras, write_csv, write_json, write_metrics
from stages.common.training import history_rows, resume_callbacks, seed_everything
from stages.dogscats import params as dogscats_params
from stages.dogscats.feature_files import features_precision, load_features, load_flipped, split_arrays
from stages.dogscats.models import BN_AFTER, dense_head
from stages.dogscats.params import MODELS, FitParams, TrainParams
from stages.dogscats.paths import FEATURES, HISTORY, MODEL, TRAIN_METRICS, TRAIN_TIMINGS


def fit(model, fp: FitParams, batch_size: int, train, valid, callbacks=()) -> dict[str, list[float]]:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(fp.learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(
        *train, validation_data=valid, epochs=fp.epochs, batch_size=batch_size, callbacks=list(callbacks), verbose=2
    )
    return history.history


def train_head(name: str, train, valid, p: TrainParams, dense=None, callbacks=()):
    """Pure step: one head trained on the features: (model, history, extra metrics). `dense` is the trained dense
    head, which bn_inserted starts from (BN inserted with scale and shift set so the function is unchanged)."""
    from stages.common.batchnorm import insert_batchnorm

    seed_everything(p.seed)
    shape, head = train[0].shape[1:], dict(hidden=p.head.hidden, dropout=p.head.dropout, l2=p.head.l2)
    extra = {}
    if name == "dense":
        model = dense_head(shape, **head, name="dense")
    elif name == "bn_scratch":
        model = dense_head(shape, **head, batchnorm=True, name="bn_scratch")
    else:
        calibration = train[0][np.random.default_rng(p.seed).permutation(len(train[0]))[: p.calibration_images]]
        model = insert_batchnorm(dense, BN_AFTER, calibration, frozen_statistics=p.bn_statistics == "calibrated")
        # before fine-tuning, the inserted model computes the trained head's function
        extra["insertion_max_abs_change"] = float(
            np.abs(model.predict(valid[0], verbose=0) - dense.predict(valid[0], verbose=0)).max()
        )
    return model, fit(model, getattr(p, name), p.batch_size, train, valid, callbacks), extra


def main() -> None:
    from stages.common.resume import backup_folder, dvc_hashes, remove_backup
    from stages.common.tracking import stage_run

    p = dogscats_params.load()
    features, index = load_features(FEATURES)
    train, valid = split_arrays(features, index, "train"), split_arrays(features, index, "valid")
    if p.train.flips:  # the mirrored training images are extra examples; validation stays on the photos as they are
        flipped = load_flipped(FEATURES, index, "train")
        train = (np.concatenate([train[0], flipped[0]]), np.concatenate([train[1], flipped[1]]))
    print(
        f"training on {len(train[1]):,} images{' (half of them mirrored)' if p.train.flips else ''}, "
        f"validating on {len(valid[1]):,}"
    )
    fingerprint = {"params": p.train.model_dump(), "inputs": dvc_hashes([FEATURES])}
    # each head's run records the policy VGG16 computed its features in (the features stage has no run of its own)
    run_params = {**p.train.model_dump(), "features_precision": features_precision(FEATURES)}
    finished = backup_folder("dogscats_train", fingerprint)  # the heads a killed run finished, kept to the end
    summary, dense = {}, None
    for name in MODELS:  # dense first: bn_inserted starts from the trained dense head
        kept_model, kept_result = finished / f"{name}.keras", finished / f"{name}.json"
        if kept_model.is_file() and kept_result.is_file():
            import stages.common.batchnorm  # noqa: F401  registers CalibratedBatchNormalization for loading

            copy_file(kept_model, MODEL.format(name=name))
            model, (rows, summary[name]) = load_keras(kept_model), json.loads(kept_result.read_text())
            print(f"{name}: kept from the interrupted run ({kept_model}), already tracked in MLflow")
        else:
            with stage_run(
                "dogscats", f"dogscats_train@{name}", params={"model": name, **run_params}, inputs=[FEATURES]
            ) as run:
                digest = fingerprint["inputs"][FEATURES]
                run.log_dataset(train[0], "dogscats-train-features", FEATURES, digest, targets=train[1])
                started = time.perf_counter()
                backup = resume_callbacks(f"dogscats_train@{name}", fingerprint)
                model, history, extra = train_head(name, train, valid, p.train, dense, [run.keras_callback(), *backup])
                rows = history_rows(history)
                summary[name] = {
                    "final_val_accuracy": rows[-1]["val_accuracy"],
                    "final_val_loss": rows[-1]["val_loss"],
                    "epochs": len(rows),
                    "seconds": time.perf_counter() - started,
                    **extra,
                }
                save_keras(MODEL.format(name=name), model)
                run.rename_metrics({"seconds": "train_seconds"})
                run.log_training(rows, summary[name], len(rows))
                run.log_keras_model(model, name, len(rows), MODEL.format(name=name))  # the last epoch's weights
            copy_file(MODEL.format(name=name), kept_model)
            write_json(kept_result, [rows, summary[name]])
        write_csv(HISTORY.format(name=name), pd.DataFrame(rows))
        dense = model if name == "dense" else dense
        insertion = summary[name].get("insertion_max_abs_change")
        print(
            f"{name}: val accuracy {summary[name]['final_val_accuracy']:.4f} after {len(rows)} epochs"
            + (f"; BN insertion changed the outputs by at most {insertion:.1e}" if insertion is not None else "")
        )
    remove_backup(finished)
    write_metrics(TRAIN_METRICS, TRAIN_TIMINGS, summary)


if __name__ == "__main__":
    run_stage(main)
