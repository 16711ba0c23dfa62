"""Fits the run-time estimate (pipelines/estimate.py) to a real run, and records how close its last estimate was.

    LESSON5_MIRROR=../shared/data python -m benchmarks.estimate [--profile quick] [--keep]
    python -m benchmarks.estimate --fit CLONE [--profile quick]     # refit a kept run, nothing rerun

Clones HEAD, applies the profile's overrides to the clone's params.yaml (none: the defaults), and times `make run`
there: the flow calibrates this machine, prints its estimate, then runs every stage two at a time. From the
flow's MLflow parent run (each stage's run seconds, the calibrated rates, the estimate) and the stages' timings
(data/*/timings: the seconds of the work itself) it records, per stage, `fixed_s` (the run seconds besides the
work, at the calibrated plain-Python speed) and `efficiency` (the stage's throughput over the calibrated rate of
its kind), which later estimates read; and the run's wall time beside the estimate the flow printed before it ran.
Run it on a quiet machine: the fit is of the run's own two stages at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    REPO,
    LoadSampler,
    benchmark_command,
    drop_results,
    record_result,
    require_mirror,
    user_env,
)
from pipelines import estimate
from pipelines.calibrate import calibrations
from pipelines.profile import hydra_value, load_profile

# per stage (without its @item): the timings file and how its work seconds are read from it
TIMINGS = {
    "dogscats_features": ("data/dogscats/timings/features.json", lambda t: t["seconds"] + t.get("flipped_seconds", 0)),
    "dogscats_finetune": ("data/dogscats/timings/finetune.json", lambda t: t["seconds"]),
    "dogscats_train": (
        "data/dogscats/timings/train.json",
        lambda t: sum(h["seconds"] for h in t.values() if isinstance(h, dict)),
    ),
    "imdb_train": ("data/imdb/timings/train_{item}.json", lambda t: t["train_seconds"]),
    "text_train": ("data/text/timings/train_{item}.json", lambda t: t["train_seconds"]),
}


def work_seconds(clone: Path, stage: str, units: float) -> float | None:
    """Seconds of the stage's own work as its timings give them (MovieLens: its planned ratings over its rate)."""
    name, _, item = stage.partition("@")
    if name == "movielens_train":
        timings = json.loads((clone / f"data/movielens/timings/train_{item}.json").read_text())
        return units / timings["train_ratings_per_s"]
    if name not in TIMINGS:
        return None
    path, read = TIMINGS[name]
    return read(json.loads((clone / path.format(item=item)).read_text()))


def parent_metrics(clone: Path) -> dict[str, float]:
    """The metrics of the flow's newest parent run in the clone's MLflow store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lesson5-pipeline")
    (run,) = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return run.data.metrics


def by_stage(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """The metrics `<prefix>.<stage>` by stage (MLflow keys write a stage's '@' as '.')."""
    return {k.removeprefix(f"{prefix}.").replace(".", "@"): v for k, v in metrics.items() if k.startswith(f"{prefix}.")}


def fit(clone: Path, metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(fixed seconds at the reference plain-Python speed, efficiency, calibrated rates) from the run whose parent
    metrics these are."""
    from stages.common.params import read_params_file

    params = read_params_file(clone / "params.yaml")
    rates, run_seconds = by_stage(metrics, "estimate.rate"), by_stage(metrics, "run_seconds")
    fixed, efficiency = {}, {}
    for stage in by_stage(metrics, "cpu_seconds"):  # the stages that ran
        work = estimate.stage_work(stage, params, clone)
        spent = work_seconds(clone, stage, work.units) if work else None
        fixed[stage] = max(run_seconds[stage] - (spent or 0.0), 0.0)
        if work and spent and rates.get(work.kind):
            efficiency[stage] = work.units / spent / rates[work.kind]
    return fixed, efficiency, rates


def record_fit(clone: Path, metrics: dict[str, float], command: str, note: str) -> None:
    """The fit's records replace the last fit's (a stage renamed or gone since leaves none behind)."""
    fixed, efficiency, rates = fit(clone, metrics)
    units = {kind: calibration.unit for kind, (_, calibration) in calibrations().items()}
    parts = {  # part: (values, decimals, description, unit of a key)
        "calibration": (rates, 2, "the reference run's calibrated rate of kind {} (pipelines/calibrate.py)", units),
        "fixed_s": (fixed, 1, "{}: its run seconds besides its work, in the reference run", {}),
        "efficiency": (
            efficiency,
            4,
            "{}: its throughput over the calibrated rate of its kind, in the reference run",
            {},
        ),
    }
    for part, (values, decimals, description, unit) in parts.items():
        drop_results("orchestration", f"orchestration.estimate.{part}.")
        for key, value in values.items():
            record_result(
                "orchestration",
                f"orchestration.estimate.{part}.{key}",
                round(value, decimals),
                description=description.format(key),
                unit=unit.get(key, "s" if part == "fixed_s" else ""),
                command=command,
                note=note,
            )


def record_accuracy(metrics: dict[str, float], tag: str, command: str, make_run_s: float, load: str) -> None:
    """The run's wall time beside the estimate the flow printed before its first stage, and its peak memory."""
    wall, estimated = metrics["wall_seconds"], metrics.get("estimate.wall_seconds")
    record_result(
        "orchestration",
        f"orchestration.estimate.{tag}.flow_wall_s",
        round(wall),
        description=f"the flow's wall time in a fresh clone's `make run` ({tag} params, on the mirror)",
        unit="s",
        command=command,
        note=f"`make run` with set-up: {make_run_s:.0f} s; {load}",
    )
    peaks = by_stage(metrics, "peak_mb")
    top = sorted(peaks, key=peaks.get, reverse=True)[:3]
    record_result(
        "orchestration",
        f"orchestration.estimate.{tag}.peak_stage_mb",
        round(max(peaks.values())),
        description="the largest resident memory of one stage process in the run (two stages run at a time)",
        unit="MB",
        command=command,
        note="largest: " + ", ".join(f"{s} {peaks[s]:,.0f} MB" for s in top),
    )
    if estimated:
        record_result(
            "orchestration",
            f"orchestration.estimate.{tag}.estimate_ratio",
            round(estimated / wall, 3),
            description="the estimate the flow printed before its first stage, over the wall time it took",
            unit="x",
            fastai="0.75-1.25 (goal)",
            command=command,
            note=f"estimated {estimated:.0f} s, took {wall:.0f} s (the estimate read the records committed then)",
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", help="apply profiles/<PROFILE>.yaml's overrides to the clone's params.yaml")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its data/, mlflow.db) to inspect")
    parser.add_argument("--fit", type=Path, metavar="CLONE", help="refit a kept clone's run; nothing runs")
    args = parser.parse_args(argv)
    command, tag = benchmark_command("benchmarks.estimate", argv), args.profile or "default"
    if args.fit:
        clone = args.fit.resolve()
        record_fit(clone, parent_metrics(clone), command, f"fitted to the {tag} run kept in {args.fit}")
        return
    mirror = require_mirror()
    clone = Path(tempfile.mkdtemp(prefix="lesson5-estimate-")) / "lesson5"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    if args.profile:
        from dvc.utils.hydra import apply_overrides

        overrides = load_profile(args.profile, REPO).overrides
        apply_overrides(str(clone / "params.yaml"), [f"{k}={hydra_value(v)}" for k, v in overrides.items()])
    env = user_env(mirror)
    try:
        with LoadSampler() as load, open(clone / "make-run.log", "w") as log:
            started = time.perf_counter()
            subprocess.run(["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
            make_run_s = time.perf_counter() - started
        subprocess.run(["make", "stop"], cwd=clone, env=env, check=True, capture_output=True)
        metrics = parent_metrics(clone)
        record_accuracy(metrics, tag, command, make_run_s, load.describe())
        record_fit(clone, metrics, command, f"fitted to a fresh clone's `make run` with the {tag} params on the mirror")
    finally:
        if not args.keep:
            shutil.rmtree(clone.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
