"""Dogs vs Cats benchmark on the real data (the mirror's photos and VGG16 weights).

Prints: this CPU's matrix-multiply peak (numpy and TF sgemm); the default chain's wall time, stage by
stage, through a real `dvc repro` in a throwaway copy of the project; VGG16 feature-extraction
throughput in images/s, GFLOP/s and as a fraction of that peak; then the validation accuracy and log
loss of the three heads over several training seeds, each a `dvc repro` that must reuse the cached
features (it says so, and how long the head-only re-run took), with the heads trained as params.yaml says
(`dogscats.train.flips`). `--flips` trains every seed's heads twice, on the photos and on the photos + their
mirror images (whose features it turns on), each scored as it is and averaged with the mirrored image's
prediction. `--finetune` reports `dogscats_finetune` (block 5 on images under a trained head; turned on if off):
each seed fine-tunes under its own heads (trained as params.yaml says), recorded as the mean and spread over seeds.

    nice -n 5 python -m benchmarks.dogscats                       # the default chain, 3 seeds
    python -m benchmarks.dogscats --max-per-class 100 --seeds 1    # a quick look
    python -m benchmarks.dogscats --max-per-class 1200 --keep      # 2,400 photos; keep the copy
    python -m benchmarks.dogscats --flips                         # heads without and with the mirrored images
    python -m benchmarks.dogscats --finetune                      # the default chain as `make run` has it, 3 seeds
    python -m benchmarks.dogscats --max-per-class 128 --seeds 1 --finetune   # fine-tuning's speed on 256 photos
    python -m benchmarks.dogscats --precision float32              # VGG16 passes in float32 (a CPU without AMX)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import get_args

import numpy as np
import yaml

from benchmarks.common import (
    REPO,
    ProjectCopy,
    benchmark_command,
    mean_and_spread,
    mean_spread,
    record_result,
    require_mirror,
)
from stages.dogscats.params import Precision
from stages.dogscats.paths import FEATURES, PHOTO_FEATURES

STAGES = [
    "dogscats_download",
    "dogscats_prepare",
    "dogscats_features",
    "dogscats_train",
    "dogscats_evaluate",
    "dogscats_finetune",
]
ISSUE_GFLOP_224 = 15.5  # the issue's figure per 224x224 image: VGG16's multiply-adds (GMAC), not FLOPs
FASTAI_ACCURACY = "98.95%"  # fast.ai's 5-model ensemble on 23,000 training images
HEADS = {
    "dense": "dense head",
    "bn_inserted": "BN inserted into the trained head",
    "bn_scratch": "BN head from scratch",
}
METRICS = {
    "val_accuracy": ("held-out accuracy", "%"),
    "val_log_loss": ("log loss (clipped as Kaggle did)", ""),
    "flip_averaged_val_accuracy": ("held-out accuracy, prediction averaged with the mirror image's", "%"),
}


def config_tag(args, precision: str) -> str:
    """The figures' id part naming what was changed from the default chain (e.g. per_class_4000.flips), and the
    VGG16 passes' `precision` unless float32 (the records before bfloat16 carry none)."""
    parts = [
        f"per_class_{args.max_per_class}" if args.max_per_class else "",
        f"input_{args.input_size}" if args.input_size else "",
        "flips" if args.flips else "",
        "" if precision == "float32" else precision,
    ]
    return ".".join(part for part in parts if part) or "default"


def sgemm_peak(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best-of-`repeats` float32 matrix-multiply rate (2 n^3 FLOP) of numpy and of TensorFlow."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    ta, tb = tf.constant(a), tf.constant(b)
    rates = {}
    for name, matmul in (("numpy", lambda: a @ b), ("tensorflow", lambda: tf.matmul(ta, tb).numpy())):
        matmul()
        best = min(_timed(matmul) for _ in range(repeats))
        rates[name] = 2 * n**3 / best / 1e9
    return rates


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-per-class", type=int, default=None, help="override dogscats.prepare.max_per_class")
    parser.add_argument("--input-size", type=int, default=None, help="override dogscats.features.input_size")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds for the accuracy figures")
    parser.add_argument(
        "--flips",
        action="store_true",
        help="also the mirrored images: heads trained without and with them, scored with and without",
    )
    parser.add_argument(
        "--finetune",
        action="store_true",
        help="report dogscats_finetune's figures over the seeds (and turn it on if params.yaml has it off)",
    )
    parser.add_argument(
        "--precision",
        choices=get_args(Precision),
        help="override dogscats.features.precision and dogscats.finetune.precision",
    )
    parser.add_argument("--keep", action="store_true", help="keep the project copy (its cached features) to inspect")
    args = parser.parse_args(argv)
    os.environ["LESSON5_MIRROR"] = str(Path(require_mirror()).resolve())  # the project copy runs elsewhere
    from stages.common.precision import machine_precision

    # the figures name the policy that ran: `auto` as this machine resolves it
    precision = machine_precision(
        args.precision or yaml.safe_load((REPO / "params.yaml").read_text())["dogscats"]["features"]["precision"]
    )
    command, tag = benchmark_command("benchmarks.dogscats", argv), config_tag(args, precision)

    def record(figure: str, value: float, description: str, unit: str, **fields) -> None:
        record_result(
            "dogscats", f"dogscats.{figure}", value, description=description, unit=unit, command=command, **fields
        )

    peak = sgemm_peak()
    print(f"sgemm peak (2048x2048 float32): numpy {peak['numpy']:.0f} GFLOP/s, TF {peak['tensorflow']:.0f} GFLOP/s")
    for name, rate in peak.items():
        record(
            f"sgemm.{name}_gflop_per_s",
            round(rate),
            f"{name} float32 matrix-multiply peak (2048x2048, best of 5)",
            "GFLOP/s",
        )

    overrides = {}
    if args.max_per_class:
        overrides["dogscats.prepare.max_per_class"] = args.max_per_class
    if args.input_size:
        overrides["dogscats.features.input_size"] = args.input_size
    if args.flips:
        overrides["dogscats.features.flips"] = True
    if args.finetune:
        overrides["dogscats.finetune.enabled"] = True
    if args.precision:
        overrides["dogscats.features.precision"] = overrides["dogscats.finetune.precision"] = args.precision
    project = ProjectCopy(overrides)
    try:
        times = {stage: project.dvc("repro", "-s", stage) for stage in STAGES}
        total = sum(times.values())
        stage_times = ", ".join(f"{s.removeprefix('dogscats_')} {t:.0f} s" for s, t in times.items())
        print(f"default chain wall time: {total:.0f} s ({total / 60:.1f} min): " + stage_times)
        record(f"{tag}.chain_s", round(total), "the default chain through `dvc repro`", "s", note=stage_times)
        data = project.root / "data/dogscats"
        photo_features = project.root / FEATURES / PHOTO_FEATURES  # rewritten only when the features stage runs
        report = json.loads((data / "prepared/report.json").read_text())
        features = {
            **json.loads((data / "metrics/features.json").read_text()),
            **json.loads((data / "timings/features.json").read_text()),
        }
        print(
            f"images: {report['usable']:,} usable of {report['scanned']:,} scanned, skipped "
            f"{report['skipped_by_reason'] or 'none'}; used train {report['used']['train']}, "
            f"valid {report['used']['valid']}"
        )

        rate = features["steady_images_per_s"]
        flops = features["gflop_per_s"]
        size = features["input_size"]
        issue_rate = ISSUE_GFLOP_224 * (size / 224) ** 2 * rate
        best_peak = max(peak.values())
        print(
            f"feature extraction at {size}x{size}, batch {features['batch_size']} on {features['devices']}: "
            f"{rate:.2f} images/s steady ({features['images_per_s']:.2f} overall, {features['seconds']:.0f} s); "
            f"{features['gflop_per_image']:.1f} GFLOP/image (2 per multiply-add) -> {flops:.0f} GFLOP/s = "
            f"{flops / best_peak:.0%} of the sgemm peak; counting the issue's 15.5 GFLOP per 224 image "
            f"(multiply-adds) it is {issue_rate:.0f} GFLOP/s = {issue_rate / best_peak:.0%}"
        )
        setting = f"{size}x{size}, batch {features['batch_size']} on {features['devices']}"
        record(
            f"{tag}.features_images_per_s",
            round(rate, 2),
            "VGG16 features, steady rate",
            "images/s",
            fastai="aim >= 50% of peak",
            note=f"{setting}; {features['seconds']:.0f} s",
        )
        record(
            f"{tag}.features_gflop_per_s",
            round(flops),
            "VGG16 features, compute rate (2 FLOP per multiply-add)",
            "GFLOP/s",
            note=setting,
        )
        if precision == "float32":  # the peak is float32's: a 16-bit policy's share says nothing
            record(
                f"{tag}.features_share_of_peak",
                round(100 * flops / best_peak),
                "VGG16 features' compute rate / the best sgemm peak",
                "%",
                fastai="aim >= 50% of peak",
                note=setting,
            )

        first = yaml.safe_load((project.root / "params.yaml").read_text())["dogscats"]["train"]["flips"]
        trainings = [first, not first] if args.flips else [first]  # dogscats.train.flips; the chain trained `first`
        per_model: dict[tuple[str, bool], dict[str, list[float]]] = {}  # (head, dogscats.train.flips) -> figures
        reruns: dict[bool, list[float]] = {}  # head-only re-run seconds, by dogscats.train.flips
        tuned: list[dict] = []  # dogscats_finetune's metrics and timings, by seed (under the `first` heads)
        for seed in range(args.seeds):
            for train_flips in trainings:
                if seed or train_flips != first:  # the chain above trained seed 42's heads with `first`
                    project.set_params(
                        {
                            "dogscats.train.seed": 42 + seed,
                            "dogscats.finetune.seed": 42 + seed,
                            "dogscats.train.flips": train_flips,
                        }
                    )
                    written = photo_features.stat().st_mtime_ns
                    seconds = project.dvc("repro", "dogscats_evaluate")
                    reused = photo_features.stat().st_mtime_ns == written
                    reruns.setdefault(train_flips, []).append(seconds)
                    print(
                        f"seed {42 + seed}{', trained on the mirrored images too' if train_flips else ''}: "
                        f"head-only re-run {seconds:.0f} s, "
                        f"features {'reused' if reused else 'RECOMPUTED'}"
                    )
                if args.finetune and train_flips == first:
                    if seed:
                        project.dvc("repro", "dogscats_finetune")
                    tuned.append(
                        {
                            **json.loads((data / "metrics/finetune.json").read_text()),
                            **json.loads((data / "timings/finetune.json").read_text()),
                        }
                    )
                    print(f"  fine-tuned: {tuned[-1]['errors']} wrong, {tuned[-1]['images_per_s']:.2f} images/s")
                metrics = json.loads((data / "metrics/evaluate.json").read_text())
                averaged = " ({flip_averaged_errors} averaged with the mirrored image)" if args.flips else ""
                print(
                    "  "
                    + ", ".join(f"{name} {m['errors']} wrong" + averaged.format(**m) for name, m in metrics.items())
                )
                for name, m in metrics.items():
                    figures = per_model.setdefault((name, train_flips), {})
                    for key in ("val_accuracy", "val_log_loss", "flip_averaged_val_accuracy"):
                        if key in m:
                            figures.setdefault(key, []).append(m[key])
        n_valid = next(iter(metrics.values()))["n_valid"]
        seeds = [42 + seed for seed in range(args.seeds)]
        for (name, trained), m in per_model.items():
            label = f"{name} trained on photos + mirrored" if trained else name
            suffix = ".trained_on_flips" if trained and args.flips else ""  # named apart only when compared
            print(
                f"{label}: val accuracy {mean_spread(m['val_accuracy'])}, log loss {mean_spread(m['val_log_loss'])}"
                + (
                    f", averaged with the mirrored image {mean_spread(m['flip_averaged_val_accuracy'])}"
                    if "flip_averaged_val_accuracy" in m
                    else ""
                )
                + f" on {n_valid} validation images"
            )
            for key, values in m.items():
                what, unit = METRICS[key]
                scale, digits = (100, 2) if unit == "%" else (1, 4)
                mean, std = mean_and_spread([scale * v for v in values], digits)
                record(
                    f"{tag}.{name}{suffix}.{key}",
                    mean,
                    f"{HEADS.get(name, name)}, {what}"
                    + (", trained on the photos + their mirror images" if trained else ""),
                    unit,
                    spread=std,
                    seeds=seeds,
                    per_seed=[round(scale * v, digits) for v in values],
                    fastai=FASTAI_ACCURACY if unit == "%" else None,
                    note=f"{n_valid} held-out images; VGG16 in {precision}",
                )
        if tuned:
            n_train = sum(report["used"]["train"].values())
            accuracy = [round(100 * t["val_accuracy"], 2) for t in tuned]
            mean, std = mean_and_spread(accuracy, 2)
            rate = statistics.mean(t["images_per_s"] for t in tuned)
            print(
                f"fine-tuning block 5 + the trained head on {n_train} training images: val accuracy "
                f"{mean_spread([t['val_accuracy'] for t in tuned])}; {rate:.2f} images/s "
                "(training and held-out passes together)"
            )
            setting = f"{n_train} training images; VGG16 in {precision}"
            record(
                f"{tag}.finetune.val_accuracy",
                mean,
                "VGG16 block 5 + the trained head fine-tuned, held-out accuracy",
                "%",
                spread=std,
                seeds=seeds,
                per_seed=accuracy,
                fastai=FASTAI_ACCURACY,
                note=f"{setting}; wrong of {n_valid}: {' / '.join(str(t['errors']) for t in tuned)}; log loss "
                + " / ".join(f"{t['val_log_loss']:.4f}" for t in tuned),
            )
            record(
                f"{tag}.finetune.images_per_s",
                round(rate, 2),
                "block-5 fine-tuning speed (training and held-out passes together)",
                "images/s",
                note=f"{setting}; " + ", ".join(f"{t['seconds']:.0f} s" for t in tuned) + " (value: the mean rate)",
            )
        for train_flips, seconds in reruns.items():
            record(
                f"{tag}{'.trained_on_flips' if train_flips and args.flips else ''}.head_rerun_s",
                round(statistics.mean(seconds)),
                "head-only re-run (`dvc repro dogscats_evaluate`, features reused)"
                + (", heads trained on photos + mirror images" if train_flips else ""),
                "s",
                note="re-runs: " + ", ".join(f"{t:.0f} s" for t in seconds) + " (value: their mean)",
            )
    finally:
        project.cleanup(keep=args.keep)


if __name__ == "__main__":
    main()
