"""The default run as a new user meets it: a fresh clone, `make run` on the mirror, then no-change reruns.

    LESSON5_MIRROR=../shared/data python -m benchmarks.default_run [--keep]

Clones this repository's HEAD into a temporary folder (`--keep` keeps it), times `make run` there (set-up and the
whole flow, sampling the load average every 30 s), then two no-change `make run`s and a no-op `dvc repro`, and
records: those times with the load they ran under, the disk used by outputs, DVC cache and MLflow store (each
file once, as the flow's summary reports it), and the run's headline figures (one seed: the default params).
Run it on a quiet machine: the load it records is then the run's own (two stages at a time on two cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, LoadSampler, benchmark_command, record_result, require_mirror, user_env
from pipelines.flow import disk_usage

# (workload, model, metric in data/<workload>/metrics/<model>.json, unit, scale, description): the run's figures
FIGURES = [
    ("movielens", "bias", "val_mse", "", 1, "MovieLens bias, val MSE"),
    ("imdb", "multi_cnn", "test_accuracy", "%", 100, "IMDB multi-size CNN, test accuracy"),
    ("imdb", "glove_cnn", "test_accuracy", "%", 100, "IMDB GloVe CNN, test accuracy"),
    ("text", "char_lstm", "val_loss", "nats/char", 1, "char LSTM, validation loss"),
    ("dogscats", "finetune", "val_accuracy", "%", 100, "Dogs vs Cats, VGG16 block 5 fine-tuned, held-out accuracy"),
]


def timed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the clone (its data/, mlflow.db) to inspect")
    args = parser.parse_args(argv)
    mirror = require_mirror()
    command = benchmark_command("benchmarks.default_run", argv)
    clone = Path(tempfile.mkdtemp(prefix="lesson5-default-run-")) / "lesson5"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = user_env(mirror)
    try:
        with LoadSampler() as load:
            full = timed(["make", "run"], clone, env, clone / "default-run.log")
        noops = [timed(["make", "run"], clone, env, clone / f"no-change-{i}.log") for i in (1, 2)]
        dvc_noop = timed([str(clone / ".venv/bin/dvc"), "repro"], clone, env, clone / "dvc-noop.log")
        subprocess.run(["make", "stop"], cwd=clone, env=env, check=True, capture_output=True)
        report(clone, command, full, load.describe(), noops, dvc_noop)
    finally:
        if not args.keep:
            shutil.rmtree(clone.parent, ignore_errors=True)


def record_disk(run: str, after: str, disk: dict[str, float], command: str, notes: dict | None = None) -> None:
    """One record per area of `disk_usage` (outputs, cache, tracking, total), as measured after `after`."""
    for area, mb in disk.items():
        record_result(
            "orchestration",
            f"orchestration.disk.{run}.{area}_mb",
            round(mb),
            description=f"disk after {after}: {area}"
            + (" (outputs, cache and MLflow store, each file once)" if area == "total" else ""),
            unit="MB",
            command=command,
            note=(notes or {}).get(area),
        )


def report(clone: Path, command: str, full: float, load: str, noops: list[float], dvc_noop: float) -> None:
    record_result(
        "orchestration",
        "orchestration.default_run.quiet.make_run_s",
        round(full),
        description="a fresh clone's `make run` on the mirror (set-up and the whole flow, default params), on an "
        "otherwise quiet 2-core machine",
        unit="s",
        fastai="<= 3600 s (goal)",
        command=command,
        note=f"{full / 60:.1f} min; {load} (the run's own two stages at a time)",
    )
    record_result(
        "orchestration",
        "orchestration.noop.whole_graph.make_run_s",
        round(sum(noops) / len(noops), 1),
        description="no-change `make run` over the whole graph, as shipped (the project's Prefect server up)",
        unit="s",
        fastai="<= 10 s (goal)",
        command=command,
        note="runs: " + ", ".join(f"{s:.1f} s" for s in noops) + " (value: their mean)",
    )
    record_result(
        "orchestration",
        "orchestration.noop.whole_graph.dvc_repro_s",
        round(dvc_noop, 1),
        description="no-op `dvc repro` of the whole graph after the default run",
        unit="s",
        fastai="<= 5 s (goal)",
        command=command,
    )
    stage_cpu(clone, command)
    record_disk("default_run", "the default run", disk_usage(str(clone)), command)
    for workload, model, metric, unit, scale, description in FIGURES:
        value = json.loads((clone / f"data/{workload}/metrics/{model}.json").read_text())[metric] * scale
        record_result(
            workload,
            f"{workload}.default_run.{model}.{metric}",
            round(value, 4 if scale == 1 else 2),
            description=f"{description}, in the default `make run` (one seed, the default params)",
            unit=unit,
            command=command,
        )
    evaluated = json.loads((clone / "data/dogscats/metrics/evaluate.json").read_text())
    head = max(evaluated, key=lambda h: evaluated[h]["val_accuracy"])
    record_result(
        "dogscats",
        "dogscats.default_run.best_head.val_accuracy",
        round(evaluated[head]["val_accuracy"] * 100, 2),
        description="Dogs vs Cats, the best head's validation accuracy in the default `make run` (one seed)",
        unit="%",
        command=command,
        note=f"the best head: {head}; "
        + ", ".join(f"{h} {m['val_accuracy'] * 100:.2f}%" for h, m in evaluated.items()),
    )


def stage_cpu(clone: Path, command: str) -> None:
    """The stages' CPU time in the full run, from its MLflow parent run (`cpu_seconds.<stage>`, pipelines/flow.py),
    and the cores and slots they kept busy on average over the flow's wall time."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lesson5-pipeline")
    (first,) = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=1)
    metrics = first.data.metrics

    def by_stage(prefix: str) -> dict[str, float]:  # MLflow keys write a stage's '@' as '.'
        return {k.removeprefix(prefix).replace(".", "@"): v for k, v in metrics.items() if k.startswith(prefix)}

    cpu, run = by_stage("cpu_seconds."), by_stage("run_seconds.")
    top = sorted(cpu, key=cpu.get, reverse=True)[:8]
    note = "largest: " + ", ".join(f"{s} {cpu[s]:.0f} s ({cpu[s] / run[s]:.2f} cores)" for s in top)
    record_result(
        "orchestration",
        "orchestration.default_run.quiet.stage_cpu_s",
        round(sum(cpu.values())),
        description="CPU time of the default run's stage commands (each with the processes it started), summed",
        unit="s",
        command=command,
        note=f"{len(cpu)} stages; {note}",
    )
    record_result(
        "orchestration",
        "orchestration.default_run.quiet.cores_busy",
        round(sum(cpu.values()) / metrics["wall_seconds"], 2),
        description="the default run's stage CPU time over the flow's wall time: cores kept busy on average",
        unit="cores",
        command=command,
    )
    ran = {s: v for s, v in run.items() if s in cpu}  # stages that ran (a skipped one's figure is its check)
    for workload in sorted({stage.split("_")[0] for stage in ran}):
        stages = {s: v for s, v in ran.items() if s.split("_")[0] == workload}
        record_result(
            "orchestration",
            f"orchestration.default_run.quiet.slot_minutes.{workload}",
            round(sum(stages.values()) / 60, 1),
            description=f"minutes of a stage slot the default run spent on {workload}'s stages (their run times "
            "summed; two slots share the 2 cores)",
            unit="min",
            command=command,
            note=", ".join(f"{s} {v / 60:.1f}" for s, v in sorted(stages.items(), key=lambda x: -x[1]) if v >= 60),
        )
    record_result(
        "orchestration",
        "orchestration.default_run.quiet.slots_busy",
        round(sum(ran.values()) / metrics["wall_seconds"], 2),
        description="the default run's stage run times over the flow's wall time: slots kept busy on average (of "
        "`pipeline.max_parallel`); at the maximum no start order can end the run sooner",
        unit="slots",
        command=command,
    )


if __name__ == "__main__":
    main()
