"""dogscats_train: on the cached features, (1) the dense head, (2) the same head with BN inserted and fine-tuned,
(3) the BN head trained from scratch; each an MLflow run."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from stages.common.cli import run_stage
from stages.common.io import save_keras, write_csv, write_metrics
from stages.common.training import history_rows, seed_everything
from stages.dogscats import params as dogscats_params
from stages.dogscats.feature_files import load_features, load_flipped, split_arrays
from stages.dogscats.models import BN_AFTER, dense_head
from stages.dogscats.params import MODELS, FitParams, TrainParams
from stages.dogscats.paths import FEATURES, HISTORY, MODEL, TRAIN_METRICS, TRAIN_TIMINGS


def fit(model, fp: FitParams, batch_size: int, train, valid, callbacks=()) -> dict[str, list[float]]:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(fp.learning_rate), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(*train, validation_data=valid, epochs=fp.epochs, batch_size=batch_size,
                        callbacks=list(callbacks), verbose=2)
    return history.history


def train_heads(train, valid, p: TrainParams, callbacks_for=lambda name: ()):
    """Pure step, a generator: yields (name, model, history, extra metrics) for the three heads in order,
    each trained only when asked for (so the caller can open one MLflow run around each)."""
    from stages.common.batchnorm import insert_batchnorm

    shape = train[0].shape[1:]
    head = dict(hidden=p.head.hidden, dropout=p.head.dropout, l2=p.head.l2)

    seed_everything(p.seed)
    dense = dense_head(shape, **head, name="dense")
    yield "dense", dense, fit(dense, p.dense, p.batch_size, train, valid, callbacks_for("dense")), {}

    seed_everything(p.seed)
    calibration = train[0][np.random.default_rng(p.seed).permutation(len(train[0]))[:p.calibration_images]]
    inserted = insert_batchnorm(dense, BN_AFTER, calibration, frozen_statistics=p.bn_statistics == "calibrated")
    # before fine-tuning, the inserted model computes the trained head's function
    change = float(np.abs(inserted.predict(valid[0], verbose=0) - dense.predict(valid[0], verbose=0)).max())
    history = fit(inserted, p.bn_inserted, p.batch_size, train, valid, callbacks_for("bn_inserted"))
    yield "bn_inserted", inserted, history, {"insertion_max_abs_change": change}

    seed_everything(p.seed)
    scratch = dense_head(shape, **head, batchnorm=True, name="bn_scratch")
    yield "bn_scratch", scratch, fit(scratch, p.bn_scratch, p.batch_size, train, valid, callbacks_for("bn_scratch")), {}


def main() -> None:
    from stages.common.tracking import stage_run

    p = dogscats_params.load()
    features, index = load_features(FEATURES)
    train, valid = split_arrays(features, index, "train"), split_arrays(features, index, "valid")
    if p.train.flips:  # the mirrored training images are extra examples; validation stays on the photos as they are
        flipped = load_flipped(FEATURES, index, "train")
        train = (np.concatenate([train[0], flipped[0]]), np.concatenate([train[1], flipped[1]]))
    print(f"training on {len(train[1]):,} images{' (half of them mirrored)' if p.train.flips else ''}, "
          f"validating on {len(valid[1]):,}")
    current = {}
    heads = train_heads(train, valid, p.train, callbacks_for=lambda name: [current["run"].keras_callback()])
    summary = {}
    for name in MODELS:
        with stage_run("dogscats", f"dogscats_train@{name}", params={"model": name, **p.train.model_dump()},
                       inputs=[FEATURES]) as run:
            current["run"] = run
            started = time.perf_counter()
            _, model, history, extra = next(heads)  # yielded in MODELS order
            rows = history_rows(history)
            summary[name] = {"final_val_accuracy": rows[-1]["val_accuracy"], "final_val_loss": rows[-1]["val_loss"],
                             "epochs": len(rows), "seconds": time.perf_counter() - started, **extra}
            save_keras(MODEL.format(name=name), model)
            write_csv(HISTORY.format(name=name), pd.DataFrame(rows))
            run.log_metrics(summary[name])
            run.log_keras_model(model)
        print(f"{name}: val accuracy {summary[name]['final_val_accuracy']:.4f} after {len(rows)} epochs"
              + (f"; BN insertion changed the outputs by at most {extra['insertion_max_abs_change']:.1e}"
                 if extra else ""))
    write_metrics(TRAIN_METRICS, TRAIN_TIMINGS, summary)


if __name__ == "__main__":
    run_stage(main)
