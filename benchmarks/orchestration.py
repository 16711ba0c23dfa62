"""Orchestration benchmark on the real data: the full flow's wall time vs the sum of its stages, and no-op costs.

    LESSON5_MIRROR=../shared/data python -m benchmarks.orchestration [--targets STAGE ...]

Runs the Prefect flow over a fresh copy of the project (own DVC cache and MLflow store), then twice again with
nothing changed (each starting its ephemeral Prefect server), then five times as `make run` runs it (the median
recorded), against the project's local Prefect server (pipelines/server.py, started before and not timed), then
a no-op `dvc repro`; beside them, an empty Prefect flow (Prefect's own floor).
`--keep` keeps the copy; `--noop-in COPY` times only the no-change runs there.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys

import mlflow

from benchmarks.common import ProjectCopy, benchmark_command, record_result, require_mirror

# Prefect's own floor: a process that runs a flow doing nothing
EMPTY_FLOW = "from prefect import flow; flow(name='empty')(lambda: None)()"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="*", default=[], help="stages to reproduce (default: the whole graph)")
    parser.add_argument("--keep", action="store_true", help="keep the project copy (its data/, mlflow.db) to inspect")
    parser.add_argument("--noop-in", metavar="COPY", help="only time the no-change runs, in a copy kept by --keep")
    parser.add_argument("--about", default="", help="with --noop-in: where that copy came from, for the records")
    args = parser.parse_args(argv)
    require_mirror()
    # a kept copy's path is this machine's: the command reads as the docs give it
    targets = ["--targets", *args.targets] if args.targets else []
    command = benchmark_command("benchmarks.orchestration", ["--noop-in", "COPY", *targets] if args.noop_in else argv)
    # figures of some stages only get ids of their own: orchestration.full_run.targets_<stage>_<stage>.wall_s
    scope, part = (
        (f"stages {', '.join(args.targets)} and their upstream", ".targets_" + "_".join(args.targets))
        if args.targets
        else ("the whole graph", "")
    )
    project = ProjectCopy(existing=args.noop_in)
    try:
        if not args.noop_in:
            full = project.flow(*args.targets, quiet=False)
            full_run_report(project, full, command, scope, part)
        noop_flows = [project.flow(*args.targets) for _ in range(2)]
        empty_flow = project.run(sys.executable, "-c", EMPTY_FLOW)
        server = [sys.executable, "-m", "pipelines.server"]
        api = subprocess.run([*server, "url"], env=project.env, capture_output=True, text=True, check=True).stdout
        try:
            project.flow(*args.targets, api=api.strip())  # the server's first flow run pays for its lazy set-up
            make_runs = [project.make_run(*args.targets) for _ in range(5)]  # a second or so of noise each
            empty_flow_served = project.run("env", f"PREFECT_API_URL={api.strip()}", sys.executable, "-c", EMPTY_FLOW)
        finally:
            subprocess.run([*server, "stop"], env=project.env, check=True)
        noop_dvc = project.dvc("repro", *args.targets)
    finally:
        project.cleanup(keep=bool(args.keep or args.noop_in))
    print(
        "No-change flow run (everything up to date), with an ephemeral Prefect server started by the run: "
        + ", ".join(f"{t:.1f}s" for t in noop_flows)
        + f" (an empty Prefect flow: {empty_flow:.1f}s)"
    )
    print(
        "No-change `make run` (the project's Prefect server already up): "
        + ", ".join(f"{t:.1f}s" for t in make_runs)
        + f" (an empty Prefect flow against that server: {empty_flow_served:.1f}s)"
    )
    print(f"No-op `dvc repro`: {noop_dvc:.1f}s")
    for figure, description, seconds, goal, note in (
        (
            "flow_ephemeral_s",
            "no-change flow with the ephemeral Prefect server a bare `python -m pipelines.flow` starts",
            sum(noop_flows) / len(noop_flows),
            "< 20 s (goal)",
            "runs: " + ", ".join(f"{t:.1f} s" for t in noop_flows) + " (value: their mean)",
        ),
        ("empty_flow_ephemeral_s", "an empty Prefect flow with its own ephemeral server", empty_flow, None, None),
        (
            "make_run_s",
            "no-change `make run` as shipped: the server lookup and the flow, the project's Prefect server already up",
            statistics.median(make_runs),
            "<= 10 s (goal)",
            "runs: " + ", ".join(f"{t:.1f} s" for t in make_runs) + " (value: their median)",
        ),
        (
            "empty_flow_served_s",
            "an empty Prefect flow against the same server (Prefect's floor)",
            empty_flow_served,
            None,
            None,
        ),
        ("dvc_repro_s", "no-op `dvc repro`", noop_dvc, "< 5 s (goal)", None),
    ):
        record_result(
            "orchestration",
            f"orchestration.noop{part}.{figure}",
            round(seconds, 1),
            description=f"{description}, {scope}",
            unit="s",
            fastai=goal,
            command=command,
            note="; ".join(filter(None, [note, args.about and f"workspace: {args.about}"])) or None,
        )


def full_run_report(project: ProjectCopy, full: float, command: str, scope: str, part: str) -> None:
    """Print the full run's metrics and its wall time against the time its stages took."""
    metrics = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "show", "--md"],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
    ).stdout
    print("\nMetrics of the full run (`dvc metrics show`):\n" + metrics)
    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lesson5-pipeline")
    first = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])[0]
    summary = client.download_artifacts(first.info.run_id, "pipeline_summary.txt", str(project.root))
    stage_seconds = _stage_seconds(open(summary).read())
    branches: dict[str, float] = {}
    for stage, seconds in stage_seconds.items():
        branches[stage.split("_", 1)[0]] = branches.get(stage.split("_", 1)[0], 0.0) + seconds
    total = sum(stage_seconds.values())
    print("Per-branch stage time (s): " + json.dumps({k: round(v, 1) for k, v in branches.items()}))
    print(
        f"Full flow wall time {full:.0f}s vs sum of its stages {total:.0f}s "
        f"(parallel speed-up {total / full:.2f}x on this machine)",
        flush=True,
    )
    per_branch = "per branch: " + ", ".join(f"{k} {v:,.0f} s" for k, v in branches.items())
    goal = None if part else "about an hour (goal)"  # for the whole graph
    for figure, description, value, unit, fastai, note in (
        ("wall_s", f"the flow over {scope} with the params in params.yaml", round(full), "s", goal, per_branch),
        ("stage_seconds_sum", "the same run's stage times summed", round(total), "s", None, None),
        ("parallel_speedup", "summed stage time / flow wall time", round(total / full, 2), "x", None, None),
    ):
        record_result(
            "orchestration",
            f"orchestration.full_run{part}.{figure}",
            value,
            description=description,
            unit=unit,
            fastai=fastai,
            command=command,
            note=note,
        )


def _stage_seconds(summary: str) -> dict[str, float]:
    """{stage: run seconds} from the flow's summary lines (`  ran  <stage>  12.3s  (waited 4.5s for a slot)`)."""
    lines = (re.match(r"\s+(?:ran|restored|skipped|failed)\s+(\S+)\s+([\d.]+)s", line) for line in summary.splitlines())
    return {m[1]: float(m[2]) for m in lines if m}


if __name__ == "__main__":
    main()
