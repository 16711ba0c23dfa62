"""dogscats_finetune (`dogscats.finetune.enabled`; minutes in bfloat16 on a CPU with AMX, hours in float32):
VGG16's last conv block and a trained head fine-tuned together on augmented training images; blocks 1-4 stay
frozen."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from stages.common.cli import run_stage
from stages.common.io import atomic_dir, load_keras, save_keras, write_csv, write_metrics
from stages.common.precision import machine_precision
from stages.common.training import history_rows, resume_callbacks, seed_everything
from stages.dogscats import params as dogscats_params
from stages.dogscats.params import FinetuneParams
from stages.dogscats.paths import (
    FINETUNE,
    FINETUNE_METRICS,
    FINETUNE_TIMINGS,
    MODEL,
    MODELS_DIR,
    PREPARED,
    WEIGHTS,
    WEIGHTS_DIR,
)
from stages.dogscats.scoring import scores
from stages.dogscats.vgg import conv_base, load_image

TRAINED_BLOCK = "block5_"


def finetune_model(base, head):
    """The conv base followed by the head, as one model; only the base's block 5 and the head train."""
    import keras

    for layer in base.layers:
        layer.trainable = layer.name.startswith(TRAINED_BLOCK)
    inputs = keras.Input(base.input.shape[1:], name="image")
    return keras.Model(inputs, head(base(inputs)), name="finetuned")


def image_batches(rows: pd.DataFrame, prepared: Path, input_size: int, batch_size: int, augment=None, seed: int = 0):
    """(image, label) batches; with `augment` (a Keras layer), shuffled and augmented, for training."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(
        ([str(prepared / p) for p in rows["path"]], rows["label"].to_numpy("float32"))
    )
    if augment is not None:
        data = data.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    data = data.map(lambda path, label: (load_image(path, input_size), label), num_parallel_calls=tf.data.AUTOTUNE)
    data = data.batch(batch_size)
    if augment is not None:
        data = data.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


def augmentation(p: FinetuneParams):
    import keras

    layers = [keras.layers.RandomFlip("horizontal", seed=p.seed)] if p.flip else []
    if p.shift:
        layers.append(keras.layers.RandomTranslation(p.shift, p.shift, fill_mode="reflect", seed=p.seed))
    return keras.Sequential(layers, name="augment") if layers else None


def held_out_scores(batches, labels, log_loss_clip: float):
    """A callback scoring the held-out images after each epoch, in the one VGG16 pass Keras' validation would make;
    it keeps the scores of the last epoch (so no second pass is needed) and reports val_accuracy / val_loss."""
    import keras

    class HeldOutScores(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.scores = scores(labels, self.model.predict(batches, verbose=0).reshape(-1), log_loss_clip)
            logs.update(val_accuracy=self.scores["val_accuracy"], val_loss=self.scores["val_log_loss"])

    return HeldOutScores()


def finetune(
    prepared: Path,
    weights: str | Path | None,
    head_path: str | Path,
    input_size: int,
    p: FinetuneParams,
    log_loss_clip: float,
    callbacks=(),
    backup=(),
):
    """Pure step: returns the fine-tuned model, its history, and its held-out scores with the training time and
    the dtype policy `p.precision` resolved to. `backup`: the callbacks of `resume_callbacks`, to resume a killed
    run after its last finished epoch."""
    import keras

    import stages.common.batchnorm  # noqa: F401  registers CalibratedBatchNormalization for loading the head

    manifest = pd.read_csv(prepared / "manifest.csv")
    train, valid = (manifest[manifest["split"] == split] for split in ("train", "valid"))
    seed_everything(p.seed)
    precision = machine_precision(p.precision)
    model = finetune_model(conv_base(input_size, weights, precision), load_keras(head_path))
    model.compile(optimizer=keras.optimizers.Adam(p.learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    held_out = held_out_scores(
        image_batches(valid, prepared, input_size, p.batch_size), valid["label"].to_numpy("float32"), log_loss_clip
    )
    started = time.perf_counter()
    # held_out first: the other callbacks (the backup's epoch logs, MLflow, History, the progress log) then see its
    # val_ metrics
    history = model.fit(
        image_batches(train, prepared, input_size, p.batch_size, augmentation(p), p.seed),
        epochs=p.epochs,
        callbacks=[held_out, *backup, *callbacks],
        shuffle=False,
        verbose=2,
    )  # shuffled by image_batches
    seconds = time.perf_counter() - started
    epochs_run = p.epochs - (backup[-1].resumed_at if backup else 0)
    # each epoch passes every training and held-out image through VGG16 (backward through block 5 for training ones)
    return (
        model,
        history.history,
        held_out.scores
        | {"seconds": seconds, "images_per_s": epochs_run * len(manifest) / seconds, "precision": precision},
    )


def main() -> None:
    from stages.common.resume import dvc_hashes
    from stages.common.tracking import stage_run

    p = dogscats_params.load()
    fp = p.finetune
    with atomic_dir(FINETUNE) as out:
        if not fp.enabled:
            (out / "DISABLED.txt").write_text(
                "dogscats.finetune.enabled is false: set it to true "
                "to fine-tune VGG16's block 5 with the trained head on images\n"
            )
            write_metrics(FINETUNE_METRICS, FINETUNE_TIMINGS, {"enabled": False})
            print("fine-tuning is off (dogscats.finetune.enabled: false)")
            return
        precision = machine_precision(fp.precision)  # `auto`: what this machine computes natively
        run_params = {**fp.model_dump(), "resolved_precision": precision}
        with stage_run("dogscats", "dogscats_finetune", params=run_params, inputs=[PREPARED, MODELS_DIR]) as run:
            inputs = dvc_hashes([PREPARED, MODELS_DIR, WEIGHTS_DIR])
            photos = pd.read_csv(Path(PREPARED) / "manifest.csv")
            run.log_dataset(photos[photos["split"] == "train"], "dogscats-train-photos", PREPARED, inputs[PREPARED])
            backup = resume_callbacks(
                "dogscats_finetune", {"params": run_params, "size": p.features.input_size, "inputs": inputs}
            )
            model, history, result = finetune(
                Path(PREPARED),
                WEIGHTS,
                MODEL.format(name=fp.head),
                p.features.input_size,
                fp,
                p.evaluate.log_loss_clip,
                [run.keras_callback()],
                backup,
            )
            result = {"enabled": True, **result}
            save_keras(out / "model.keras", model)
            rows = history_rows(history)
            write_csv(out / "history.csv", pd.DataFrame(rows))
            run.rename_metrics({"seconds": "train_seconds"})
            run.log_training(rows, {k: v for k, v in result.items() if k not in rows[-1]}, len(rows))
            run.log_keras_model(model, f"finetuned_{fp.head}", len(rows), out / "model.keras")  # the last epoch
    write_metrics(FINETUNE_METRICS, FINETUNE_TIMINGS, result)
    print(
        f"fine-tuned block 5 + {fp.head}: val accuracy {result['val_accuracy']:.4f} ({result['errors']} wrong of "
        f"{result['n_valid']}), log loss {result['val_log_loss']:.4f}, {result['seconds']:.0f} s in {precision} "
        f"({result['images_per_s']:.2f} images/s)"
    )


if __name__ == "__main__":
    run_stage(main)
