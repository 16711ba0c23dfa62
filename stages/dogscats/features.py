"""dogscats_features: the VGG16 conv base run once over every prepared image; block-5 features cached as float16
(and, with `flips`, once more over every image's horizontal mirror, for training on flips and averaging with them)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, write_csv, write_json, write_metrics
from stages.common.precision import machine_precision
from stages.common.resume import backup_folder, dvc_hashes, remove_backup
from stages.dogscats import params as dogscats_params
from stages.dogscats.paths import (
    FEATURES,
    FEATURES_INFO,
    FEATURES_METRICS,
    FEATURES_TIMINGS,
    FLIPPED_FEATURES,
    PHOTO_FEATURES,
    PREPARED,
    WEIGHTS,
    WEIGHTS_DIR,
)
from stages.dogscats.vgg import conv_base, conv_flops, load_image


def image_dataset(paths: list[str], input_size: int, batch_size: int, flip: bool = False):
    """Batches of images, decoded and resized in parallel and prefetched while the model runs."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(lambda p: load_image(p, input_size, flip), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def extract(
    model,
    paths: list[str],
    input_size: int,
    batch_size: int,
    out: np.ndarray,
    flip: bool = False,
    start: int = 0,
    checkpoint: Callable[[int], None] | None = None,
    checkpoint_every: int = 0,
) -> dict[str, float]:
    """Fill `out` (n, *feature shape) with the model's outputs from image `start` on (a multiple of `batch_size`:
    the batches, hence the bytes, are those of an uninterrupted run); return timing figures. `checkpoint(done)` is
    called about every `checkpoint_every` images (at a batch's end), once `out` holds them."""
    import tensorflow as tf
    from tqdm.auto import tqdm

    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)  # the last batch is smaller
    done, started, warm_started = start, time.perf_counter(), None
    bar = tqdm(
        total=len(paths),
        initial=start,
        desc="VGG16 features" + (", flipped" if flip else ""),
        unit="img",
        mininterval=5.0,
    )
    try:
        for batch in image_dataset(paths[start:], input_size, batch_size, flip):
            out[done : done + len(batch)] = infer(batch).numpy().astype(out.dtype)
            done += len(batch)
            bar.update(len(batch))
            if warm_started is None:  # the first batch includes tracing and thread-pool start-up
                warm_started, warm_done = time.perf_counter(), done
            if checkpoint and done < len(paths) and done // checkpoint_every > (done - len(batch)) // checkpoint_every:
                checkpoint(done)
    except tf.errors.InvalidArgumentError:
        raise StageError(
            f"{undecodable(paths)}: TensorFlow cannot decode this image although PIL could; "
            "remove it and re-run dogscats_prepare"
        ) from None
    bar.close()
    seconds = time.perf_counter() - started
    computed = done - start
    if not computed:  # everything was there already (killed after the last checkpoint of the pass)
        return {"images": done, "seconds": seconds, "images_per_s": 0.0, "steady_images_per_s": 0.0}
    warm_seconds = time.perf_counter() - warm_started
    steady = (done - warm_done) / warm_seconds if done > warm_done else computed / seconds
    return {"images": done, "seconds": seconds, "images_per_s": computed / seconds, "steady_images_per_s": steady}


def undecodable(paths: list[str]) -> str:
    import tensorflow as tf

    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError:
            return path
    return "an image"


class Checkpoints:
    """A features pass's progress in a resume folder: the partly filled array and how many images it holds
    (`progress.json`, written after the array is flushed, so it never claims what a kill lost)."""

    def __init__(self, folder: Path, every: int):
        self.folder, self.every = folder, every
        self.progress = folder / "progress.json"

    def done(self, name: str) -> int:
        return json.loads(self.progress.read_text()).get(name, 0) if self.progress.is_file() else 0

    def saver(self, name: str, features: np.ndarray) -> Callable[[int], None]:
        def save(done: int) -> None:
            features.flush()
            saved = json.loads(self.progress.read_text()) if self.progress.is_file() else {}
            write_json(self.progress, {**saved, name: done})

        return save


def compute_features(
    prepared: Path,
    out_dir: Path,
    weights: str | Path | None,
    input_size: int,
    batch_size: int,
    flips: bool = False,
    checkpoints: Checkpoints | None = None,
    precision: str = "float32",
):
    """Pure step: write PHOTOS (float16, manifest order), with `flips` also FLIPPED, index.csv and INFO (the
    policy `precision` resolved to) into out_dir; return stats (the rates are those of the first pass, `precision`
    the policy). With `checkpoints`, each pass is computed in their folder, resumes where a killed run left it, and
    is moved into out_dir when whole."""
    import tensorflow as tf

    manifest = pd.read_csv(prepared / "manifest.csv")
    precision = machine_precision(precision)
    model = conv_base(input_size, weights, precision)
    paths = [str(prepared / p) for p in manifest["path"]]

    def write_pass(name: str, flip: bool) -> dict:
        folder = checkpoints.folder if checkpoints else out_dir
        folder.mkdir(parents=True, exist_ok=True)
        start = checkpoints.done(name) if checkpoints else 0
        if start:
            print(f"dogscats_features: resuming {name} at image {start:,} of {len(paths):,} from {folder}", flush=True)
        shape = (len(manifest), *model.output.shape[1:])
        features = np.lib.format.open_memmap(folder / name, mode="r+" if start else "w+", dtype=np.float16, shape=shape)
        save, every = (checkpoints.saver(name, features), checkpoints.every) if checkpoints else (None, 0)
        stats = extract(model, paths, input_size, batch_size, features, flip, start, save, every)
        features.flush()
        if save:
            save(len(paths))  # whole: a kill during a later pass does not redo this one
        return stats

    passes = [PHOTO_FEATURES, *([FLIPPED_FEATURES] if flips else [])]
    stats = write_pass(PHOTO_FEATURES, flip=False)
    if flips:
        stats["flipped_seconds"] = write_pass(FLIPPED_FEATURES, flip=True)["seconds"]
    if checkpoints:
        for name in passes:
            os.replace(checkpoints.folder / name, out_dir / name)
    write_csv(out_dir / "index.csv", manifest)
    write_json(out_dir / FEATURES_INFO, {"precision": precision})
    gflop = conv_flops(model) / 1e9
    devices = [d.name for d in tf.config.list_physical_devices("GPU")] or ["CPU"]
    return {
        **stats,
        "input_size": input_size,
        "batch_size": batch_size,
        "feature_shape": list(model.output.shape[1:]),
        "gflop_per_image": gflop,
        "gflop_per_s": gflop * stats["steady_images_per_s"],
        "devices": devices,
        "precision": precision,
    }


def main() -> None:
    p = dogscats_params.load()
    precision = machine_precision(p.features.precision)  # `auto`: a killed run resumes only in the same policy
    folder = backup_folder(
        "dogscats_features",
        {"params": p.features.model_dump(), "precision": precision, "inputs": dvc_hashes([PREPARED, WEIGHTS_DIR])},
    )
    checkpoints = Checkpoints(folder, p.features.checkpoint_images)
    with atomic_dir(FEATURES) as out:
        stats = compute_features(
            Path(PREPARED),
            out,
            WEIGHTS,
            p.features.input_size,
            p.features.batch_size,
            p.features.flips,
            checkpoints,
            precision,
        )
    remove_backup(folder)
    write_metrics(FEATURES_METRICS, FEATURES_TIMINGS, stats)
    print(
        f"features {stats['feature_shape']} of {stats['images']:,} images at {stats['input_size']}px on "
        f"{', '.join(stats['devices'])} in {precision}: {stats['seconds']:.0f} s, "
        f"{stats['steady_images_per_s']:.1f} images/s, "
        f"{stats['gflop_per_s']:.0f} GFLOP/s"
        + (f"; the mirrored images {stats['flipped_seconds']:.0f} s" if p.features.flips else "")
    )


if __name__ == "__main__":
    run_stage(main)
