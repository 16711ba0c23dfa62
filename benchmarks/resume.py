"""What resuming costs: the seconds one backup takes to write (after every epoch, or every features checkpoint)
against the seconds of the epoch (or checkpoint interval) it protects, for the default models at their real sizes.

The backups are written here, with the project's own code, on the default params; the epochs' seconds are read
from the timings of a finished default run (`make run`) in this checkout, so run it after one:

LESSON5_MIRROR=../shared/data python -m benchmarks.resume [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import REPO, benchmark_command, record_result, require_mirror
from stages.common import environment


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lesson5-resume-") as folder:
        yield Path(folder)


def seconds_per_call(write: Callable[[], None], repeats: int) -> float:
    """The median of `repeats` timed writes, after one untimed (the first opens files and warms caches)."""
    write()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        write()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def compiled(model):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.optimizer.build(model.trainable_variables)  # Adam's moments exist, as after the first epoch
    return model


def keras_backup_seconds(model, repeats: int) -> float:
    """One write of the backup Keras' BackupAndRestore keeps for movielens, text and the fine-tuning
    (stages.common.training.resume_callbacks): weights with the optimizer state, and the epoch's metadata."""
    from stages.common import resume
    from stages.common.training import resume_callbacks

    with scratch_folder() as folder, contextlib.chdir(folder):
        backup = resume_callbacks("benchmark", {})[0]
        backup.set_model(compiled(model))
        Path(backup.backup_dir).mkdir(parents=True)
        backup._current_epoch, backup._last_batch_seen = 1, -1
        seconds = seconds_per_call(backup._save_model, repeats)
        assert resume.BACKUP_ROOT.is_dir()  # written where the stages write it, inside the scratch folder
    return seconds


def imdb_backup_seconds(model, repeats: int) -> float:
    """One epoch's end of stages.imdb.phases.PhaseBackup: model and optimizer variables, the best epoch's weights."""
    from stages.imdb.phases import KeepBest, PhaseBackup

    best = KeepBest("val_accuracy")
    best.weights = compiled(model).get_weights()
    with scratch_folder() as folder:
        save = PhaseBackup(folder).callback(best, {}, [0.0])
        save.set_model(model)
        save.on_train_begin()
        logs = {"loss": 0.3, "accuracy": 0.9, "val_loss": 0.3, "val_accuracy": 0.9}
        return seconds_per_call(lambda: save.on_epoch_end(0, dict(logs)), repeats)


def features_checkpoint_seconds(images: int, every: int, repeats: int) -> float:
    """One checkpoint of dogscats_features: `every` new rows of the float16 block-5 array flushed, then progress."""
    from stages.dogscats.features import Checkpoints

    with scratch_folder() as folder:
        features = np.lib.format.open_memmap(folder / "f.npy", mode="w+", dtype=np.float16, shape=(images, 7, 7, 512))
        save = Checkpoints(folder, every).saver("f.npy", features)
        rng, done = np.random.default_rng(0), [0]

        def checkpoint() -> None:  # the rows computed since the last checkpoint are dirty, as in the stage
            rows = slice(done[0] % images, done[0] % images + every)
            features[rows] = rng.standard_normal((len(range(images)[rows]), 7, 7, 512)).astype(np.float16)
            done[0] += every
            save(done[0])

        return seconds_per_call(checkpoint, repeats)


def read(path: str) -> dict:
    return json.loads((REPO / path).read_text())


def measure(repeats: int) -> list[dict]:
    """[{stage, backup_s, epoch_s, what}] for each long stage of the default run."""
    from stages.common.io import load_keras, load_npy
    from stages.dogscats import params as dogscats_params
    from stages.dogscats.finetune import finetune_model
    from stages.dogscats.paths import MODEL, WEIGHTS
    from stages.dogscats.vgg import conv_base
    from stages.imdb import params as imdb_params
    from stages.imdb.models import build as build_imdb
    from stages.imdb.paths import GLOVE_EMBEDDING
    from stages.movielens import params as movielens_params
    from stages.movielens.train import build as build_movielens
    from stages.text import params as text_params
    from stages.text.corpus import load_tokens
    from stages.text.models import build as build_text
    from stages.text.params import is_word_model

    rows = []
    text = text_params.load()
    for name in ("char_lstm", "word_lstm"):
        p = text.models[name]
        vocab = len(load_tokens(is_word_model(p))[2])
        run = read(f"data/text/timings/train_{name}.json")["train_seconds"]
        epochs = read(f"data/text/metrics/train_{name}.json")["epochs_trained"]
        rows.append(
            {
                "stage": f"text_train@{name}",
                "backup_s": keras_backup_seconds(build_text(p, vocab), repeats),
                "epoch_s": run / epochs,
                "what": "an epoch",
            }
        )

    imdb = imdb_params.load()
    glove = load_npy(GLOVE_EMBEDDING)
    for name, p in imdb.models.items():  # NB-SVM (imdb.nbsvm) has no epochs: it fits in about two minutes
        model = build_imdb(
            p, imdb.tokenize.vocab_size, p.maxlen or imdb.tokenize.maxlen, glove if p.embedding == "glove" else None
        )
        run = read(f"data/imdb/timings/train_{name}.json")["train_seconds"]
        epochs = read(f"data/imdb/metrics/train_{name}.json")["epochs"]
        rows.append(
            {
                "stage": f"imdb_train@{name}",
                "backup_s": imdb_backup_seconds(model, repeats),
                "epoch_s": run / epochs,
                "what": "an epoch",
            }
        )

    movielens = movielens_params.load()
    ratings = pd.read_parquet(REPO / "data/movielens/prepared/ratings.parquet")
    users = len(pd.read_parquet(REPO / "data/movielens/prepared/users.parquet"))
    movies = len(pd.read_parquet(REPO / "data/movielens/prepared/movies.parquet"))
    for name, p in movielens.models.items():
        per_s = read(f"data/movielens/timings/train_{name}.json")["train_ratings_per_s"]
        model = build_movielens(p, users, movies)
        rows.append(
            {
                "stage": f"movielens_train@{name}",
                "backup_s": keras_backup_seconds(model, repeats),
                "epoch_s": int((~ratings["valid"]).sum()) / per_s,
                "what": "an epoch",
            }
        )

    dogscats = dogscats_params.load()
    features = read("data/dogscats/timings/features.json")
    every = dogscats.features.checkpoint_images
    images = read("data/dogscats/metrics/features.json")["images"]
    rows.append(
        {
            "stage": "dogscats_features",
            "backup_s": features_checkpoint_seconds(images, every, repeats),
            "epoch_s": features["seconds"] / images * every,
            "what": f"{every} images",
        }
    )
    import stages.common.batchnorm  # noqa: F401  registers CalibratedBatchNormalization, for a head that has it

    head = load_keras(MODEL.format(name=dogscats.finetune.head))
    model = finetune_model(conv_base(dogscats.features.input_size, WEIGHTS), head)
    rows.append(
        {
            "stage": "dogscats_finetune",
            "backup_s": keras_backup_seconds(model, repeats),
            "epoch_s": None,
            "what": "an epoch (docs/dogscats.md)",
        }
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed backup writes per stage (the median is kept)")
    args = parser.parse_args(argv)
    require_mirror()
    environment.apply_defaults()
    os.chdir(REPO)  # the stages' params and data paths are relative to the repository root
    load_before = os.getloadavg()
    try:
        rows = measure(args.repeats)
    except FileNotFoundError as err:
        sys.exit(
            f"{err.filename} is missing: run the default pipeline first (`make run`), whose outputs and timings "
            "this benchmark reads"
        )
    command = benchmark_command("benchmarks.resume", argv)
    run_note = "epoch seconds from this checkout's default run (data/*/timings, stages sharing the 2 cores)"
    for row in rows:
        workload, stage = row["stage"].split("_", 1)[0], row["stage"]
        key = stage.replace("@", ".")
        line = f"{stage:28} backup {row['backup_s'] * 1000:8.1f} ms"
        note = f"load {load_before[0]:.2f} at the start; median of {args.repeats} writes"
        if row["epoch_s"] is not None:
            share = 100 * row["backup_s"] / row["epoch_s"]
            line += f"  against {row['what']} of {row['epoch_s']:8.1f} s: {share:.2f}%"
            record_result(
                workload,
                f"{workload}.resume.{key}.backup_share",
                round(share, 3),
                description=f"{stage}: one resume backup's write time, as a share of {row['what']}'s time",
                unit="%",
                command=command,
                note=f"backup {row['backup_s']:.3f} s against {row['epoch_s']:.1f} s ({run_note}); {note}",
            )
        record_result(
            workload,
            f"{workload}.resume.{key}.backup_s",
            round(row["backup_s"], 4),
            description=f"{stage}: seconds to write one resume backup (after {row['what']})",
            unit="s",
            command=command,
            note=note,
        )
        print(line)


if __name__ == "__main__":
    main()
