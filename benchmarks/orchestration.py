"""Orchestration benchmark on the real data: the full flow's wall time vs the sum of its stages, and no-op costs.

    LESSON5_MIRROR=../shared/data python -m benchmarks.orchestration [--targets STAGE ...]

Runs the Prefect flow over a fresh copy of the project (own DVC cache and MLflow store), then again with
nothing changed, then a no-op `dvc repro`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import mlflow

from benchmarks.common import ProjectCopy, require_mirror


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="*", default=[], help="stages to reproduce (default: the whole graph)")
    parser.add_argument("--keep", action="store_true", help="keep the project copy (its data/, mlflow.db) to inspect")
    args = parser.parse_args(argv)
    require_mirror()
    project = ProjectCopy()
    try:
        full = project.flow(*args.targets, quiet=False)
        noop_flow = project.flow(*args.targets)
        noop_dvc = project.dvc("repro", *args.targets)
        metrics = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--md"], cwd=project.root,
                                 env=project.env, capture_output=True, text=True).stdout
        client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
        experiment = client.get_experiment_by_name("lesson5-pipeline")
        first = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])[0]
        summary = client.download_artifacts(first.info.run_id, "pipeline_summary.txt", str(project.root))
        stage_seconds = _stage_seconds(open(summary).read())
    finally:
        if args.keep:
            print(f"project copy kept in {project.root}")
        else:
            project.cleanup()
    print("\nMetrics of the full run (`dvc metrics show`):\n" + metrics)
    branches: dict[str, float] = {}
    for stage, seconds in stage_seconds.items():
        branches[stage.split("_", 1)[0]] = branches.get(stage.split("_", 1)[0], 0.0) + seconds
    total = sum(stage_seconds.values())
    print("\nPer-branch stage time (s): " + json.dumps({k: round(v, 1) for k, v in branches.items()}))
    print(f"Full flow wall time {full:.0f}s vs sum of its stages {total:.0f}s "
          f"(parallel speed-up {total / full:.2f}x on this machine)")
    print(f"No-change flow run (everything cached, incl. ephemeral Prefect start-up): {noop_flow:.1f}s")
    print(f"No-op `dvc repro`: {noop_dvc:.1f}s")


def _stage_seconds(summary: str) -> dict[str, float]:
    seconds = {}
    for line in summary.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("ran", "restored", "skipped", "failed") and parts[2].endswith("s"):
            seconds[parts[1]] = float(parts[2][:-1])
    return seconds


if __name__ == "__main__":
    main()
