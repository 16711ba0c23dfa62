"""dogscats_features: the VGG16 conv base run once over every prepared image; block-5 features cached as float16
(and, with `flips`, once more over every image's horizontal mirror, for training on flips and averaging with them)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, write_csv, write_metrics
from stages.dogscats import params as dogscats_params
from stages.dogscats.paths import (
    FEATURES,
    FEATURES_METRICS,
    FEATURES_TIMINGS,
    FLIPPED_FEATURES,
    PHOTO_FEATURES,
    PREPARED,
    WEIGHTS,
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
    model, paths: list[str], input_size: int, batch_size: int, out: np.ndarray, flip: bool = False
) -> dict[str, float]:
    """Fill `out` (n, *feature shape) with the model's outputs; return timing figures."""
    import tensorflow as tf
    from tqdm.auto import tqdm

    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)  # the last batch is smaller
    done, started, warm_started = 0, time.perf_counter(), None
    bar = tqdm(total=len(paths), desc="VGG16 features" + (", flipped" if flip else ""), unit="img", mininterval=5.0)
    try:
        for batch in image_dataset(paths, input_size, batch_size, flip):
            out[done : done + len(batch)] = infer(batch).numpy().astype(out.dtype)
            done += len(batch)
            bar.update(len(batch))
            if warm_started is None:  # the first batch includes tracing and thread-pool start-up
                warm_started, warm_done = time.perf_counter(), done
    except tf.errors.InvalidArgumentError:
        raise StageError(
            f"{undecodable(paths)}: TensorFlow cannot decode this image although PIL could; "
            "remove it and re-run dogscats_prepare"
        ) from None
    bar.close()
    seconds = time.perf_counter() - started
    warm_seconds = time.perf_counter() - warm_started
    steady = (done - warm_done) / warm_seconds if done > warm_done else done / seconds
    return {"images": done, "seconds": seconds, "images_per_s": done / seconds, "steady_images_per_s": steady}


def undecodable(paths: list[str]) -> str:
    import tensorflow as tf

    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError:
            return path
    return "an image"


def compute_features(
    prepared: Path, out_dir: Path, weights: str | Path | None, input_size: int, batch_size: int, flips: bool = False
):
    """Pure step: write PHOTOS (float16, manifest order), with `flips` also FLIPPED, and index.csv into
    out_dir; return stats (the rates are those of the first pass)."""
    import tensorflow as tf

    manifest = pd.read_csv(prepared / "manifest.csv")
    model = conv_base(input_size, weights)
    paths = [str(prepared / p) for p in manifest["path"]]

    def write_pass(name: str, flip: bool) -> dict:
        features = np.lib.format.open_memmap(
            out_dir / name, mode="w+", dtype=np.float16, shape=(len(manifest), *model.output.shape[1:])
        )
        stats = extract(model, paths, input_size, batch_size, features, flip)
        features.flush()
        return stats

    stats = write_pass(PHOTO_FEATURES, flip=False)
    if flips:
        stats["flipped_seconds"] = write_pass(FLIPPED_FEATURES, flip=True)["seconds"]
    write_csv(out_dir / "index.csv", manifest)
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
    }


def main() -> None:
    p = dogscats_params.load()
    with atomic_dir(FEATURES) as out:
        stats = compute_features(
            Path(PREPARED), out, WEIGHTS, p.features.input_size, p.features.batch_size, p.features.flips
        )
    write_metrics(FEATURES_METRICS, FEATURES_TIMINGS, stats)
    print(
        f"features {stats['feature_shape']} of {stats['images']:,} images at {stats['input_size']}px on "
        f"{', '.join(stats['devices'])}: {stats['seconds']:.0f} s, {stats['steady_images_per_s']:.1f} images/s, "
        f"{stats['gflop_per_s']:.0f} GFLOP/s"
        + (f"; the mirrored images {stats['flipped_seconds']:.0f} s" if p.features.flips else "")
    )


if __name__ == "__main__":
    run_stage(main)
