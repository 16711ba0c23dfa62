"""`make gpu-check`: what TensorFlow sees (its devices, the CUDA and cuDNN it was built with, `nvidia-smi -L`), then
one epoch of each GPU-heavy kind of work in this project on generated data, through the stages' own code at their
params.yaml sizes: VGG16's conv base (random weights: a forward pass for features, then block 5 fine-tuned with a
dense head), the char LSTM, the IMDB CNN and the MovieLens bias model. Each throughput is printed and recorded in
benchmarks/results/gpu.json with the device and the dtype policy. A few minutes on a GPU. Without one it says so
and fails, unless --allow-cpu: then the same runs on the CPU at a tiny size (seconds; what the tests run).

    python -m benchmarks.gpu_check [--allow-cpu] [--precision POLICY] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import RESULTS_DIR, benchmark_command, machine, record_result
from stages.common import environment

environment.apply_defaults()  # before TensorFlow sets up a GPU: memory grown on demand, as in the stages

# Each kind of work: its unit, and its batches at the small size (on a GPU; at its params.yaml batch size). The tiny
# size (the CPU's) runs 3 of each; the first batch of a pass is never timed (it traces and compiles).
WORKS = {
    "vgg16_features": ("images", 32),
    "vgg16_finetune": ("images", 16),
    "char_lstm": ("chars", 200),
    "imdb_cnn": ("reviews", 200),
    "movielens_bias": ("ratings", 400),
}
TINY_BATCHES = 3
TINY_IMAGES = (32, 2)  # input size and batch size of the VGG16 passes at the tiny size (VGG16's smallest input)


def clock():
    """A Keras callback timing the steady state of one pass: from the end of its first batch (tracing and compiling
    done) to the end of its last, each waited for; `rate(units per batch)` is then units per second."""
    import keras

    class Clock(keras.callbacks.Callback):
        def _tick(self, batch, logs=None):
            keras.ops.convert_to_numpy(keras.tree.flatten(logs)[0])  # waits for the device to finish the batch
            self.start, self.batches = (time.perf_counter(), 0) if batch == 0 else (self.start, self.batches + 1)
            self.end = time.perf_counter()

        on_train_batch_end = on_predict_batch_end = _tick

        def rate(self, per_batch: float) -> float:
            return self.batches * per_batch / (self.end - self.start)

    return Clock()


def vgg16(batches: dict[str, int], rng, tiny: bool, precision: str) -> dict[str, float]:
    import keras

    from stages.dogscats import params
    from stages.dogscats.finetune import finetune_model
    from stages.dogscats.models import dense_head
    from stages.dogscats.vgg import conv_base

    p = params.load()
    size, batch = TINY_IMAGES if tiny else (p.features.input_size, p.features.batch_size)
    images = rng.uniform(-124, 152, (batches["vgg16_features"] * batch, size, size, 3)).astype("float32")
    base = conv_base(size, None, precision)
    forward = clock()
    base.predict(images, batch_size=batch, callbacks=[forward], verbose=0)
    head = p.train.head
    model = finetune_model(base, dense_head(base.output.shape[1:], head.hidden, head.dropout, head.l2))
    model.compile(optimizer=keras.optimizers.Adam(p.finetune.learning_rate), loss="binary_crossentropy")
    batch = batch if tiny else p.finetune.batch_size
    n = batches["vgg16_finetune"] * batch
    step = clock()
    model.fit(images[:n], rng.integers(0, 2, n).astype("float32"), batch_size=batch, callbacks=[step], verbose=2)
    return {"vgg16_features": forward.rate(batch), "vgg16_finetune": step.rate(batch)}


def char_lstm(batches: dict[str, int], rng) -> dict[str, float]:
    from stages.text import params
    from stages.text.train import train

    p = params.load().models["char_lstm"].model_copy(update={"epochs": 1})
    vocab, chars = 85, p.seq_len * p.batch_size  # Nietzsche has 85 distinct characters
    timer = clock()
    text = rng.integers(0, vocab, batches["char_lstm"] * chars + 1)
    train(text, rng.integers(0, vocab, 4 * p.seq_len + 1), vocab, p, [timer])
    return {"char_lstm": timer.rate(chars)}


def imdb_cnn(batches: dict[str, int], rng) -> dict[str, float]:
    from stages.imdb import params
    from stages.imdb.train import train

    p = params.load()
    cnn = p.models["cnn"].model_copy(update={"phases": [p.models["cnn"].phases[0].model_copy(update={"epochs": 1})]})
    n, vocab = batches["imdb_cnn"] * cnn.batch_size, p.tokenize.vocab_size
    reviews = rng.integers(1, vocab, (n, p.tokenize.maxlen)).astype("int32")
    timer = clock()
    train((reviews, rng.integers(0, 2, n).astype("float32")), None, cnn, vocab, extra_callbacks=[timer])
    return {"imdb_cnn": timer.rate(cnn.batch_size)}


def movielens_bias(batches: dict[str, int], rng) -> dict[str, float]:
    from stages.movielens import params
    from stages.movielens.train import train

    p = params.load().models["bias"].model_copy(update={"epochs": 1})
    users, movies, n = 610, 9742, (batches["movielens_bias"] + 1) * p.batch_size  # ml-latest-small's; 1 held out
    ratings = pd.DataFrame(
        {
            "user": rng.integers(0, users, n),
            "movie": rng.integers(0, movies, n),
            "rating": rng.integers(1, 11, n) / 2,
            "valid": np.arange(n) >= n - p.batch_size,
        }
    )
    timer = clock()
    train(ratings, users, movies, p, extra_callbacks=[timer])
    return {"movielens_bias": timer.rate(p.batch_size)}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-cpu", action="store_true", help="without a GPU, run on the CPU at a tiny size")
    parser.add_argument(
        "--precision", help="VGG16's Keras dtype policy (default: mixed_float16 on a GPU, else float32)"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    import tensorflow as tf

    # each pass builds its own model (a stage process builds one): TensorFlow's advice on retracing does not apply
    tf.get_logger().addFilter(lambda record: "triggered tf.function retracing" not in record.getMessage())
    build = tf.sysconfig.get_build_info()
    print(
        f"TensorFlow {tf.__version__}, CUDA {build.get('cuda_version', '-')}, cuDNN {build.get('cudnn_version', '-')}"
    )
    print(f"devices TensorFlow sees: {', '.join(d.name for d in tf.config.list_physical_devices())}")
    if shutil.which("nvidia-smi"):
        print(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip())
    print(f"GPU memory: TF_FORCE_GPU_ALLOW_GROWTH={os.environ.get('TF_FORCE_GPU_ALLOW_GROWTH')}")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.allow_cpu:
        sys.exit(
            "gpu-check: TensorFlow sees no GPU (`make install GPU=1` on a Linux machine with an NVIDIA GPU and its "
            "driver); --allow-cpu runs the same on the CPU at a tiny size"
        )
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name) if gpus else None
    device = device or f"CPU: {machine()['cpu']}"
    size, precision = "small" if gpus else "tiny", args.precision or ("mixed_float16" if gpus else "float32")
    batches = {work: n if gpus else TINY_BATCHES for work, (_, n) in WORKS.items()}
    print(f"running on {device} at the {size} size; VGG16 in {precision}, the other models in float32")

    rates, peaks = {}, {}
    rng = np.random.default_rng(0)
    for work in (functools.partial(vgg16, tiny=not gpus, precision=precision), char_lstm, imdb_cnn, movielens_bias):
        done = work(batches, rng)
        if gpus:  # the most this process's TensorFlow held at once: the room a parallel slot needs
            with contextlib.suppress(ValueError, RuntimeError):  # an allocator that keeps no statistics
                peaks |= dict.fromkeys(done, tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30)
                tf.config.experimental.reset_memory_stats("GPU:0")
        rates |= done
    prefix = "gpu." if gpus else f"gpu.cpu_{size}."
    for work, rate in rates.items():
        unit = WORKS[work][0]
        policy = precision if work.startswith("vgg16") else "float32"
        peak = f"; peak GPU memory {peaks[work]:.2f} GiB" if work in peaks else ""
        print(f"{work:<16} {rate:>14,.0f} {unit}/s  ({policy}{peak})")
        what = "VGG16 conv base forward" if work == "vgg16_features" else f"{work}: training"
        record_result(
            "gpu",
            f"{prefix}{work}.{unit}_per_s",
            round(rate, 1),
            description=f"{what} {unit}/s over one pass of generated data, its first batch not timed",
            unit=f"{unit}/s",
            command=benchmark_command("benchmarks.gpu_check", argv),
            note=f"device {device}; dtype policy {policy}; {size} size, {batches[work]} batches{peak}; "
            f"TensorFlow {tf.__version__}, CUDA {build.get('cuda_version', '-')}",
            results_dir=args.results_dir,
        )
    print(f"recorded in {args.results_dir / 'gpu.json'}")
    return rates


if __name__ == "__main__":
    environment.filter_native_noise()
    main()
