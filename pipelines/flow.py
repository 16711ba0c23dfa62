"""The main job: a Prefect flow generated from dvc.yaml, one task per DVC stage.

    python -m pipelines.flow [STAGE ...] [--max-parallel N] [--dry-run]

Stages run in dependency order as soon as their upstream stages finish, up to
`pipeline.max_parallel` stage commands at once; DVC decides what is up to date (see
pipelines/dvc_runner.py for how this stays equivalent to `dvc repro`). Before the
first stage, this machine's speed is measured for a few seconds and the run's time
estimated (pipelines/estimate.py): a free slot goes to the stage heading the longest
remaining path, and each finished stage logs the time left. A failing stage stops only
the stages downstream of it; the flow ends with a summary of what ran, what was
skipped and what failed, and why.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines import estimate
from pipelines.dvc_runner import DvcRunner, StageInfo, python_env
from pipelines.params import PipelineParams
from pipelines.parent_runs import WorkloadParents
from stages.common.params import ParamsError, load_params, read_params_file
from stages.common.resume import safe_load_yaml
from stages.common.tracking import FLOW_RUN_ENV, PARENT_RUN_ENV, stage_run
from stages.common.tracking_store import tracking_uri, warm_up


@dataclass
class StageResult:
    stage: str
    status: str  # ran | skipped | restored | failed | blocked
    seconds: float = 0.0  # running (or checking) the stage, not waiting for a slot
    waited: float = 0.0  # waiting for a free slot (pipeline.max_parallel)
    cpu_seconds: float | None = None  # CPU time of its command and every process that command started
    peak_mb: float | None = None  # the largest resident memory of one of those processes
    error: str = ""


class StageFailed(RuntimeError):
    pass


class Slots:
    """At most `size` stage commands at once; a freed slot goes to the waiting stage of the highest priority (its
    longest remaining path), so the stages with slack wait and the critical path does not."""

    def __init__(self, size: int):
        self._free, self._waiting, self._order = size, [], itertools.count()
        self._changed = threading.Condition()

    def acquire(self, priority: float, blocking: bool = True) -> bool:
        with self._changed:
            if not blocking and (not self._free or self._waiting):
                return False
            entry = (-priority, next(self._order))
            heapq.heappush(self._waiting, entry)
            while not (self._free and self._waiting[0] == entry):
                self._changed.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._changed.notify_all()
            return True

    def release(self) -> None:
        with self._changed:
            self._free += 1
            self._changed.notify_all()


class Progress:
    """Which stages of this run are done or running, and the time left by the run's estimate."""

    def __init__(self, upstream: dict[str, tuple[str, ...]], seconds: dict[str, float] | None, slots: int):
        self.upstream, self.seconds, self.slots = upstream, seconds, slots
        self.priorities = estimate.remaining_path(upstream, seconds) if seconds else {}
        self.done: set[str] = set()
        self.started: dict[str, float] = {}
        self._lock = threading.Lock()

    def priority(self, stage: str) -> float:
        return self.priorities.get(stage, 0.0)

    def start(self, stage: str) -> None:
        with self._lock:
            self.started[stage] = time.perf_counter()

    def finish(self, stage: str) -> str:
        """Marks `stage` done; a line saying how far the run is."""
        with self._lock:
            self.done.add(stage)
            self.started.pop(stage, None)
            line = f"progress: {len(self.done)} of {len(self.upstream)} stages done"
            if not self.seconds:
                return line
            now = time.perf_counter()
            running = {s: now - t for s, t in self.started.items()}
            left = estimate.simulate(self.upstream, self.seconds, self.slots, frozenset(self.done), running)
            return f"{line}, about {estimate.minutes(left)} left (estimate)"


def api_only(run_logger) -> logging.LoggerAdapter:
    """A logger for the run of `run_logger` that writes to Prefect's API only: the terminal has the line already."""
    from prefect.logging.handlers import APILogHandler

    base = logging.getLogger("lesson5.stage_output")
    if not base.handlers:
        base.addHandler(APILogHandler())
        base.setLevel(logging.INFO)
        base.propagate = False
    return logging.LoggerAdapter(base, run_logger.extra)


@task(cache_policy=NO_CACHE)
def reproduce_stage(
    runner: DvcRunner,
    info: StageInfo,
    env: dict[str, str],
    slots: Slots,
    progress: Progress,
    parents: WorkloadParents,
    timeout_s: float,
) -> dict:
    """One DVC stage: skipped if up to date, restored from the run-cache, or its command run in a free slot (its
    MLflow run nested under its workload's parent run). Returns its outcome, the seconds it waited and ran, and
    the CPU seconds of its command."""
    logger = get_run_logger()
    started = time.perf_counter()
    outcome = runner.prepare(info.name)
    if outcome != "run":
        logger.info("%s: %s", info.name, "up to date" if outcome == "skipped" else "restored from the run-cache")
        logger.info(progress.finish(info.name))
        return {"status": outcome, "waited": 0.0, "seconds": time.perf_counter() - started}

    to_prefect = api_only(logger)

    def echo(line: str) -> None:  # the terminal, and the task's log in Prefect (a worker's run shows its epochs)
        sys.stderr.write(f"[{info.name}] {line}\n")
        sys.stderr.flush()
        to_prefect.info(line)

    priority = progress.priority(info.name)
    if not slots.acquire(priority, blocking=False):
        logger.info("%s waits for a free slot (pipeline.max_parallel)", info.name)
        slots.acquire(priority)
    progress.start(info.name)
    waited = time.perf_counter() - started
    logger.info("%s: running `%s`", info.name, info.cmd)
    if parent := parents.run_id(info.workload):
        env = {**env, PARENT_RUN_ENV: parent}
    try:
        code, tail, cpu_seconds, peak_mb = runner.run_command(info, env, echo, timeout_s=timeout_s)
    finally:
        slots.release()
    if code != 0:
        raise StageFailed(f"`{info.cmd}` exited with {code}:\n{tail}")
    runner.record(info.name)
    logger.info("%s finished and recorded in dvc.lock; %s", info.name, progress.finish(info.name))
    ran = time.perf_counter() - started - waited
    return {"status": "ran", "waited": waited, "seconds": ran, "cpu_seconds": cpu_seconds, "peak_mb": peak_mb}


def check_timeouts(params: PipelineParams, dvc_yaml: str) -> None:
    """A timeout named after no stage of dvc.yaml is a typo that would leave the stage on the default: refused."""
    with open(dvc_yaml) as f:
        names = set((safe_load_yaml(f.read()) or {}).get("stages", {}))
    if unknown := sorted(set(params.timeout_minutes) - names - {"default"}):
        raise ParamsError(
            f"params.yaml: pipeline.timeout_minutes names no stage of {dvc_yaml}: {', '.join(unknown)} "
            "(stage names without their @item" + (f", e.g. {sorted(names)[0]})" if names else ")")
        )


def _retry_options(info: StageInfo, retries: int) -> dict:
    if not info.name.split("@")[0].endswith("_download") or retries == 0:
        return {}
    return {"retries": retries, "retry_delay_seconds": [10 * 3**i for i in range(retries)]}


def up_to_date(runner: DvcRunner, stages: dict[str, StageInfo]) -> dict[str, StageResult]:
    """The stages nothing in this run can change: up to date, and so is every stage upstream of them. They are
    reported as skipped without a task run each (on the default graph, 48 task runs' API calls took ~1.5 s)."""
    settled: dict[str, StageResult] = {}
    for name, info in stages.items():  # dependency order: upstream stages are decided first
        started = time.perf_counter()
        if all(u in settled for u in info.upstream) and runner.unchanged(name):
            settled[name] = StageResult(name, "skipped", seconds=time.perf_counter() - started)
    return settled


def pending(stages: dict[str, StageInfo], settled: dict) -> dict[str, tuple[str, ...]]:
    """The stages not settled, each with its upstream stages that are not settled either."""
    return {n: tuple(u for u in info.upstream if u not in settled) for n, info in stages.items() if n not in settled}


def run_estimate(
    stages: dict[str, StageInfo], settled: dict, root: str, slots: int, env: dict[str, str]
) -> estimate.Plan | None:
    """The estimate of the stages not settled (pipelines/estimate.py); None when nothing is left to run."""
    upstream = pending(stages, settled)
    if not upstream:
        return None
    params_file = Path(root) / "params.yaml"
    return estimate.plan(upstream, read_params_file(params_file), params_file, Path(root), slots, env)


def schedule(
    runner: DvcRunner,
    stages: dict[str, StageInfo],
    params: PipelineParams,
    env: dict[str, str],
    parents: WorkloadParents,
    settled: dict[str, StageResult],
    seconds: dict[str, float] | None,
) -> list[StageResult]:
    """Every stage this run may change submitted at once, each waiting for its upstream stages (Prefect's
    `wait_for`, which also draws the DVC graph in Prefect's UI): a failure leaves only its downstream stages not
    run. At most `max_parallel` stage commands run at once (slots taken inside the task, the longest remaining path
    first by `seconds`), so up-to-date checks are never throttled. Prefect's thread pool is unbounded by default: a
    stage waiting for its upstream never holds back another."""
    slots = Slots(params.max_parallel)
    progress = Progress(pending(stages, settled), seconds, params.max_parallel)
    futures = {}
    for name, info in stages.items():  # dependency order: every upstream future exists already
        if name in settled:
            continue
        task_run = reproduce_stage.with_options(
            name=name, task_run_name=name, **_retry_options(info, params.download_retries)
        )
        futures[name] = task_run.submit(
            runner,
            info,
            env,
            slots,
            progress,
            parents,
            params.timeout_s(name),
            wait_for=[futures[u] for u in info.upstream if u in futures],
        )
    results = []
    for name in stages:
        if name in settled:
            results.append(settled[name])
            continue
        future = futures[name]
        future.wait()
        state = future.state
        if state.is_completed():
            results.append(StageResult(name, **future.result()))
        elif state.is_pending():  # NotReady: an upstream task run did not complete
            upstream = next(u for u in stages[name].upstream if u in futures and not futures[u].state.is_completed())
            results.append(StageResult(name, "blocked", error=f"upstream stage {upstream} did not finish"))
        else:
            error = str(future.result(raise_on_failure=False)).strip()
            results.append(StageResult(name, "failed", error=error[-2000:]))
    return results


DISK_AREAS = {"outputs": ("data",), "cache": (".dvc/cache",), "tracking": ("mlflow.db", "mlruns", "mlartifacts")}


def disk_usage(root: str) -> dict[str, float]:
    """MB in the DVC outputs, the DVC cache and the MLflow store, and `total`: all three with each file counted once
    (a hardlinked output and its cached copy are one file on disk)."""
    seen: set[tuple[int, int]] = set()
    usage = dict.fromkeys([*DISK_AREAS, "total"], 0.0)
    for area, names in DISK_AREAS.items():
        for name in names:
            path = os.path.join(root, name)
            walked = [(path, [], [""])] if os.path.isfile(path) else os.walk(path)
            for folder, _, files in walked:
                for file in files:
                    stat = os.lstat(os.path.join(folder, file) if file else folder)
                    usage[area] += stat.st_size / 1e6
                    if (stat.st_dev, stat.st_ino) not in seen:
                        seen.add((stat.st_dev, stat.st_ino))
                        usage["total"] += stat.st_size / 1e6
    return usage


def estimate_metrics(planned: estimate.Plan | None) -> dict[str, float]:
    """The run's estimate as MLflow metrics: the calibrated rates, each stage's seconds and the wall time, so a
    finished run can refit the estimate (`python -m benchmarks.estimate`)."""
    if not planned or not planned.seconds:
        return {}
    rates = {f"estimate.rate.{k}": v for k, v in planned.rates.items() if isinstance(v, (int, float))}
    seconds = {f"estimate.seconds.{s.replace('@', '.')}": v for s, v in planned.seconds.items()}
    return {"estimate.wall_seconds": planned.wall, **rates, **seconds}


def format_summary(
    results: list[StageResult], wall: float, load: tuple[float, ...], disk: dict[str, float] | None = None
) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("ran", "restored", "skipped", "failed", "blocked")}
    lines = [f"pipeline finished in {wall:.1f}s: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    lines.append(f"  load average at the end: {' '.join(f'{x:.2f}' for x in load)} (1, 5, 15 min)")
    if disk:
        areas = ", ".join(f"{area} {disk[area]:,.0f}" for area in DISK_AREAS)
        lines.append(f"  disk (MB): {areas}; {disk['total']:,.0f} in all, each file once (outputs link to the cache)")
    for r in results:
        waited = f"  (waited {r.waited:.1f}s for a slot)" if r.waited >= 0.1 else ""
        cpu = f"  cpu {r.cpu_seconds:7.1f}s = {r.cpu_seconds / r.seconds:4.2f} cores" if r.cpu_seconds else ""
        memory = f"  peak {r.peak_mb:6,.0f} MB" if r.peak_mb else ""
        lines.append(f"  {r.status:<9} {r.stage:<32} {r.seconds:8.1f}s{cpu}{memory}{waited}")
        if r.error:
            lines.extend(f"      {line}" for line in r.error.splitlines()[-8:])
    return "\n".join(lines)


def run_url(run_id: str) -> str:
    """Where an MLflow run opens in the UI: the tracking server's, or `make ui`'s for a local store."""
    import mlflow

    uri = tracking_uri()
    experiment = mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


def summary_artifact(results: list[StageResult], wall: float, mlflow_run_id: str | None) -> None:
    """The summary as a table on the flow run's Artifacts tab in the Prefect UI, linking the MLflow parent run."""
    from prefect.artifacts import create_table_artifact

    where = ""
    if mlflow_run_id:
        try:
            where = f"[MLflow parent run {mlflow_run_id}]({run_url(mlflow_run_id)}) (`make ui`)"
        except Exception:  # tracking unavailable: the summary still goes to Prefect
            where = f"MLflow parent run {mlflow_run_id}"
    create_table_artifact(
        [
            {"stage": r.stage, "status": r.status, "run_s": round(r.seconds, 1), "wait_s": round(r.waited, 1)}
            | {"cpu_s": round(r.cpu_seconds, 1) if r.cpu_seconds is not None else ""}
            | {"error": r.error.splitlines()[-1] if r.error else ""}
            for r in results
        ],
        key="lesson5-pipeline-summary",
        description=f"pipeline finished in {wall:.1f}s. {where}",
    )


@flow(name="lesson5-pipeline", log_prints=True)
def pipeline(targets: list[str] | None = None, max_parallel: int | None = None, root: str = ".") -> list[dict]:
    """Reproduce the DVC pipeline (or `targets` and their upstream) with independent branches in parallel."""
    from prefect.runtime import flow_run

    started = time.perf_counter()
    root = os.path.abspath(root)
    params = load_params("pipeline", PipelineParams, os.path.join(root, "params.yaml"))
    if max_parallel is not None:
        params = params.model_copy(update={"max_parallel": max_parallel})
    check_timeouts(params, os.path.join(root, "dvc.yaml"))
    runner = DvcRunner(root)
    env = python_env()
    env[FLOW_RUN_ENV] = str(flow_run.get_id() or "")
    cwd = os.getcwd()
    os.chdir(root)  # tracking resolves the default store and dvc.lock against the repo root
    try:
        # DVC's repo lock is held from reading the graph to the last dvc.lock write, so a manual
        # `dvc repro` meanwhile stops at once instead of racing the flow
        with runner.hold_lock():
            stages = runner.stages(targets)
            settled = up_to_date(runner, stages)
            logger = get_run_logger()
            if settled:
                logger.info("%d of %d stages up to date with their upstream: not run", len(settled), len(stages))
            planned = run_estimate(stages, settled, root, params.max_parallel, env)
            if planned:
                logger.info(planned.text)
            with stage_run(
                "pipeline",
                "pipeline",
                params={**params.model_dump(), "targets": targets or "all"},
                tags={"prefect.flow_run_id": env[FLOW_RUN_ENV]},
            ) as parent:
                if parent.run_id:
                    env[PARENT_RUN_ENV] = parent.run_id
                parents = WorkloadParents(parent.run_id, {"prefect.flow_run_id": env[FLOW_RUN_ENV]})
                results = schedule(runner, stages, params, env, parents, settled, planned.seconds if planned else None)
                parents.finish({stages[r.stage].workload for r in results if r.status in ("failed", "blocked")})
                wall, load, disk = time.perf_counter() - started, os.getloadavg(), disk_usage(root)
                summary = format_summary(results, wall, load, disk)
                counts = {
                    f"stages_{s}": sum(r.status == s for r in results)
                    for s in ("ran", "restored", "skipped", "failed", "blocked")
                }
                # each stage's run time, slot wait and CPU time apart, as the summary shows them (MLflow keys take
                # no '@')
                stage_times = {
                    f"{what}_seconds.{r.stage.replace('@', '.')}": value
                    for r in results
                    for what, value in (("run", r.seconds), ("wait", r.waited), ("cpu", r.cpu_seconds))
                    if (r.status == "ran" or what == "run") and value is not None
                }
                peaks = {f"peak_mb.{r.stage.replace('@', '.')}": r.peak_mb for r in results if r.peak_mb}
                loads = dict(zip(("loadavg_1m", "loadavg_5m", "loadavg_15m"), load, strict=True))
                disk_mb = {f"disk_mb.{area}": mb for area, mb in disk.items()}
                parent.log_metrics(
                    {
                        "wall_seconds": wall,
                        **counts,
                        **stage_times,
                        **peaks,
                        **loads,
                        **disk_mb,
                        **estimate_metrics(planned),
                    }
                )
                parent.log_text(summary, "pipeline_summary.txt")
                summary_artifact(results, wall, parent.run_id)
    finally:
        os.chdir(cwd)
    get_run_logger().info("\n%s", summary)
    failed = [r for r in results if r.status in ("failed", "blocked")]
    if failed:
        raise StageFailed(f"{len(failed)} stage(s) failed or were blocked: " + ", ".join(r.stage for r in failed))
    return [asdict(r) for r in results]


def dry_run(targets: list[str] | None, max_parallel: int | None, root: str) -> int:
    """What `make run` would run, and how long it would take here; nothing runs and no Prefect run is made."""
    params = load_params("pipeline", PipelineParams, os.path.join(root, "params.yaml"))
    runner = DvcRunner(root)
    stages = runner.stages(targets)
    settled = up_to_date(runner, stages)
    to_run = [s for s in stages if s not in settled]
    print(f"{len(to_run)} of {len(stages)} stages would run: {', '.join(to_run)}")
    planned = run_estimate(stages, settled, root, max_parallel or params.max_parallel, python_env())
    print(planned.text if planned else "nothing to run: every stage is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="stages to reproduce with their upstream (default: all)")
    parser.add_argument("--max-parallel", type=int, help="override params.yaml pipeline.max_parallel")
    parser.add_argument("--root", default=".", help="the DVC repository (default: current folder)")
    parser.add_argument(
        "--profile", help="run profiles/<PROFILE>.yaml's overrides as a DVC experiment instead (pipelines/profile.py)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would run and the estimate for this machine, run nothing"
    )
    args = parser.parse_args(argv)
    if args.profile:
        from pipelines.profile import run
        from stages.common import environment
        from stages.common.cli import StageError

        environment.filter_native_noise()  # the plan imports TensorFlow to ask for a GPU
        try:
            return run(args.profile, Path(args.root), args.targets or None, args.dry_run)
        except StageError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            return 2
    if args.dry_run:
        return dry_run(args.targets or None, args.max_parallel, args.root)
    # MLflow's import and store set-up overlap Prefect's start-up (an ephemeral server takes ~10 s to answer)
    threading.Thread(target=warm_up, args=(args.root,), name="mlflow-warm-up", daemon=True).start()
    state = pipeline(args.targets or None, args.max_parallel, args.root, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
