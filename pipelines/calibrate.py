"""This machine's speed on each heavy kind of work, measured for a few seconds: what the run-time estimate scales by.

    python -m pipelines.calibrate [--kinds vgg lstm cnn cpu] [--params params.yaml]

Prints one JSON object: {kind: units per second, "precision": the VGG16 policy measured, "machine": ...}.
Each kind runs the project's own model at the params' size, as its stage would:
  vgg   images/s through the VGG16 conv base (features' input size and precision, random weights)
  lstm  characters/s of a training step of the char LSTM (text.models.char_lstm)
  cnn   reviews/s of a training step of the IMDB 1-D CNN (imdb.models.cnn)
  cpu   million steps/s of a plain Python loop, the best of 5: the gauge of every stage's fixed costs (start-up,
        imports, reading and writing), which run in one Python thread (no TensorFlow)
It runs in its own process (`measure` below), so the flow never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

KINDS = ("vgg", "lstm", "cnn", "cpu")
SECONDS = 2.0  # timed per kind, after one warm-up step


def _rate(step: Callable[[], None], units_per_step: float, seconds: float = SECONDS) -> float:
    """Units per second of `step`, timed over at least `seconds` (and at least two steps) after one warm-up."""
    step()
    steps, started = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * units_per_step / (time.perf_counter() - started)


def python_mops(steps: int = 1_000_000, trials: int = 5) -> float:
    """The best of `trials` timings: a busy neighbour slows some of them, not the machine's own speed."""
    best = float("inf")
    for _ in range(trials):
        started = time.perf_counter()
        total = 0
        for i in range(steps):
            total += i & 7
        best = min(best, time.perf_counter() - started)
    return steps / best / 1e6


def vgg_images_per_s(input_size: int, precision: str, batch: int = 8) -> float:
    import numpy as np

    from stages.dogscats.vgg import conv_base

    model = conv_base(input_size, None, precision)
    images = np.random.default_rng(0).random((batch, input_size, input_size, 3), dtype=np.float32)
    return _rate(lambda: model.predict_on_batch(images), batch)


def char_lstm_chars_per_s(p, vocab_size: int = 57) -> float:
    import numpy as np

    from stages.text.models import build

    model = build(p, vocab_size)
    model.compile("adam", "sparse_categorical_crossentropy")
    tokens = np.random.default_rng(0).integers(0, vocab_size, (p.batch_size, p.seq_len))
    return _rate(lambda: model.train_on_batch(tokens, tokens), p.batch_size * p.seq_len)


def imdb_cnn_reviews_per_s(p, vocab_size: int, maxlen: int) -> float:
    import numpy as np

    from stages.imdb.models import build

    model = build(p, vocab_size, maxlen)
    model.compile("adam", "binary_crossentropy")
    rng = np.random.default_rng(0)
    reviews, labels = rng.integers(0, vocab_size, (p.batch_size, maxlen)), rng.integers(0, 2, p.batch_size)
    return _rate(lambda: model.train_on_batch(reviews, labels), p.batch_size)


def measure(kinds: list[str], params_file: Path) -> dict:
    """{kind: rate} for `kinds`, at the sizes params_file gives; the VGG16 policy as "precision"."""
    from stages.common.params import load_params

    rates: dict = {}
    for kind in kinds:
        if kind == "cpu":
            rates["cpu"] = python_mops()
        elif kind == "vgg":
            from stages.common.precision import machine_precision
            from stages.dogscats.params import DogsCatsParams

            features = load_params("dogscats", DogsCatsParams, params_file).features
            rates["precision"] = machine_precision(features.precision)
            rates["vgg"] = vgg_images_per_s(features.input_size, rates["precision"])
        elif kind == "lstm":
            from stages.text.params import TextParams

            rates["lstm"] = char_lstm_chars_per_s(load_params("text", TextParams, params_file).models["char_lstm"])
        elif kind == "cnn":
            from stages.imdb.params import ImdbParams

            imdb = load_params("imdb", ImdbParams, params_file)
            rates["cnn"] = imdb_cnn_reviews_per_s(imdb.models["cnn"], imdb.tokenize.vocab_size, imdb.tokenize.maxlen)
    return rates


def calibrate(kinds: list[str], params_file: Path, env: dict[str, str] | None = None, timeout_s: float = 300) -> dict:
    """`measure` in a process of its own (TensorFlow stays out of the caller). Raises RuntimeError on failure."""
    command = [sys.executable, "-m", "pipelines.calibrate", "--params", str(params_file), "--kinds", *kinds]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"calibration failed ({' '.join(command[1:])}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    from stages.common import environment

    environment.filter_native_noise()
    print(json.dumps(measure(args.kinds, args.params)))


if __name__ == "__main__":
    main()
