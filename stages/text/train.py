"""text_train@<model>: fit one model from params.yaml text.models.<model> on the prepared ids."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from stages.common.cli import run_stage
from stages.common.io import write_json
from stages.common.params import pick_model
from stages.common.training import LearningRateSchedule, resume_callbacks, save_training_outputs, seed_everything
from stages.text import corpus, paths
from stages.text import params as text_params
from stages.text.corpus import load_tokens
from stages.text.params import LSTMParams, is_word_model, per_unit_names
from stages.text.paths import PREPARED

TIMER_STATE = "timer.json"  # {finished epoch: [training seconds, batches] so far}, beside the resume backup


def training_pairs(ids: np.ndarray, p, every_position: bool, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = corpus.sequences(ids, p.seq_len, p.stride or p.seq_len, what)
    return x, (y if every_position else y[:, -1])


def epoch_timer(max_minutes: float | None, backup_dir: Path | None = None):
    """Sums the seconds spent in training batches (validation excluded). `max_minutes` is an opt-in safety net, not a
    budget (budgets are epochs, so the same params give the same model on any machine): it stops at the batch that
    passes it and sets `cut_short`.

    A stop inside an epoch still validates and records that (partial) epoch. With `backup_dir` (the resume backup's
    folder) the sums are kept there after each epoch, so a resumed training counts the minutes spent before the
    kill against its cap.
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        seconds, batches, cut_short = 0.0, 0, False

        def on_train_begin(self, logs=None):
            resumed_at = self.model._initial_epoch or 0  # set by BackupAndRestore, which runs before this callback
            state = backup_dir / TIMER_STATE if backup_dir else None
            if resumed_at and state and state.is_file():
                sums = json.loads(state.read_text())  # the backup's epoch, or an earlier one if killed in between
                if earlier := [epoch for epoch in sums if int(epoch) <= resumed_at]:
                    self.seconds, self.batches = sums[max(earlier, key=int)]

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.started, self.counted = epoch, time.perf_counter(), False

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            elapsed = self.seconds + time.perf_counter() - self.started
            if max_minutes is not None and elapsed > max_minutes * 60 and not self.model.stop_training:
                print(
                    f"WARNING: cut short at batch {batch + 1} of epoch {self.epoch + 1}: "
                    f"{elapsed / 60:.1f} min of training reached max_minutes={max_minutes}; this model depends on "
                    "the machine's speed (set max_minutes: null to train every epoch)"
                )
                self.model.stop_training = self.cut_short = True

        def on_test_begin(self, logs=None):
            self._count()

        def on_epoch_end(self, epoch, logs=None):
            self._count()
            if backup_dir and backup_dir.is_dir():  # the backup of this epoch has just been written
                state = backup_dir / TIMER_STATE
                sums = json.loads(state.read_text()) if state.is_file() else {}
                write_json(state, {**sums, str(epoch + 1): [self.seconds, self.batches]})

        def _count(self):
            if not self.counted:  # on_test_begin also fires for evaluate() outside fit: count each epoch once
                self.seconds += time.perf_counter() - self.started
                self.counted = True

    return EpochTimer()


def train(train_ids: np.ndarray, valid_ids: np.ndarray, vocab_size: int, p, extra_callbacks=(), backup=()):
    """Pure step: (trained model, history dict, {training seconds, tokens/s, targets/s}). `backup`: the callbacks of
    `resume_callbacks`, to resume a killed training after its last finished epoch."""
    import keras

    from stages.text.models import build, model_inputs

    every = isinstance(p, LSTMParams)  # the LSTMs predict every next token, the lesson's models the last one
    x, y = training_pairs(train_ids, p, every, "the training text")  # too-short text fails here, before any TF
    x_valid, y_valid = training_pairs(valid_ids, p.model_copy(update={"stride": None}), every, "the validation tail")
    seed_everything(p.seed)
    model = build(p, vocab_size)
    schedule = LearningRateSchedule(p.lr_schedule)
    model.compile(optimizer=keras.optimizers.Adam(schedule.rate(0)), loss="sparse_categorical_crossentropy")
    timer = epoch_timer(p.max_minutes, Path(backup[0].backup_dir) if backup else None)
    history = model.fit(
        model_inputs(model, x),
        y,
        batch_size=p.batch_size,
        epochs=p.epochs,
        validation_data=(model_inputs(model, x_valid), y_valid),
        callbacks=[*backup, schedule.callback(), timer, *extra_callbacks],
        verbose=2,
    )
    full_epochs, partial_batches = divmod(timer.batches, math.ceil(len(x) / p.batch_size))
    sequences_seen = full_epochs * len(x) + partial_batches * p.batch_size
    speed = {
        "train_seconds": timer.seconds,
        "epochs_run": len(history.history["loss"]),
        "epochs_trained": sequences_seen / len(x),  # fractional when max_minutes stopped inside an epoch
        "cut_short": int(timer.cut_short),
        "train_tokens_per_s": sequences_seen * x.shape[1] / timer.seconds,
        "train_targets_per_s": sequences_seen * (y.size // len(y)) / timer.seconds,
    }
    return model, history.history, speed


def main(name: str) -> None:
    from stages.common.resume import dvc_hashes
    from stages.common.tracking import stage_run

    p = text_params.load()
    mp = pick_model(p.models, name, "text.models")
    train_ids, valid_ids, vocab = load_tokens(is_word_model(mp))
    unit = "words" if is_word_model(mp) else "chars"
    with stage_run("text", f"text_train@{name}", params={"model": name, **mp.model_dump()}, inputs=[PREPARED]) as run:
        run.rename_metrics({**per_unit_names(unit[:-1]), "epochs_trained": "epochs", "epochs_run": None})
        hashes = dvc_hashes([PREPARED])
        run.log_dataset(train_ids, f"nietzsche-train-{unit}", PREPARED, hashes[PREPARED])
        backup = resume_callbacks(f"text_train@{name}", {"params": mp.model_dump(), "data": hashes})
        model, history, speed = train(
            train_ids, valid_ids, len(vocab), mp, extra_callbacks=[run.keras_callback()], backup=backup
        )
        if speed["cut_short"]:
            run.set_tags({"lesson5.cut_short": f"max_minutes={mp.max_minutes} stopped the training"})
        tokens_per_s = speed.pop("train_tokens_per_s")
        summary = {
            "final_loss": float(history["loss"][-1]),
            "final_val_loss": float(history["val_loss"][-1]),
            **speed,
            f"train_{unit}_per_s": tokens_per_s,
        }
        save_training_outputs(
            run,
            paths,
            name,
            model,
            history,
            summary,
            f"{name}: cross-entropy (nats per {unit[:-1]}) per epoch",
            ["loss", "val_loss"],
        )
    print(
        f"{name}: final loss {summary['final_loss']:.4f}, val loss {summary['final_val_loss']:.4f} "
        f"after {speed['epochs_trained']:.2f} epoch(s), {speed['train_seconds']:.0f} s of training, "
        f"{tokens_per_s:,.0f} {unit}/s"
    )


if __name__ == "__main__":
    run_stage(main, sys.argv[1])
