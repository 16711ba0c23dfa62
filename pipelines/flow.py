"""The main job: a Prefect flow generated from dvc.yaml, one task per DVC stage.

    python -m pipelines.flow [STAGE ...] [--max-parallel N]

Stages run in dependency order as soon as their upstream stages finish, up to
`pipeline.max_parallel` stage commands at once; DVC decides what is up to date (see
pipelines/dvc_runner.py for how this stays equivalent to `dvc repro`). A failing
stage stops only the stages downstream of it; the flow ends with a summary of
what ran, what was skipped and what failed, and why.
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from pipelines.dvc_runner import DvcRunner, StageInfo, python_env
from stages.common.params import Schema, load_params
from stages.common.tracking import FLOW_RUN_ENV, PARENT_RUN_ENV, stage_run, warm_up


class PipelineParams(Schema):
    max_parallel: int = Field(ge=1, le=64, description="stages running at once")
    download_retries: int = Field(ge=0, le=10, description="retries (with backoff) of *_download stages")


@dataclass
class StageResult:
    stage: str
    status: str  # ran | skipped | restored | failed | blocked
    seconds: float = 0.0
    error: str = ""


class StageFailed(RuntimeError):
    pass


@task(cache_policy=NO_CACHE)
def reproduce_stage(runner: DvcRunner, info: StageInfo, env: dict[str, str], slots: threading.Semaphore) -> str:
    """One DVC stage: skipped if up to date, restored from the run-cache, or its command run in a free slot."""
    logger = get_run_logger()
    outcome = runner.prepare(info.name)
    if outcome == "skipped":
        logger.info("%s is up to date: skipped", info.name)
        return outcome
    if outcome == "restored":
        logger.info("%s restored from DVC's run-cache", info.name)
        return outcome
    logger.info("%s: running `%s`", info.name, info.cmd)

    def echo(line: str) -> None:
        sys.stderr.write(f"[{info.name}] {line}\n")
        sys.stderr.flush()

    if not slots.acquire(blocking=False):
        logger.info("%s waits for a free slot (pipeline.max_parallel)", info.name)
        slots.acquire()
    try:
        code, tail = runner.run_command(info, env, echo)
    finally:
        slots.release()
    if code != 0:
        raise StageFailed(f"`{info.cmd}` exited with {code}:\n{tail}")
    runner.record(info.name)
    logger.info("%s finished and recorded in dvc.lock", info.name)
    return "ran"


def _retry_options(info: StageInfo, retries: int) -> dict:
    if not info.name.split("@")[0].endswith("_download") or retries == 0:
        return {}
    return {"retries": retries, "retry_delay_seconds": [10 * 3**i for i in range(retries)]}


def schedule(runner: DvcRunner, stages: dict[str, StageInfo], params: PipelineParams,
             env: dict[str, str]) -> list[StageResult]:
    """Submit each stage once its upstream finished, never below a failure. At most `max_parallel` stage
    commands run at once; up-to-date checks don't take a slot, so a no-change run is not throttled.
    Waits on task completions (no polling, which cost a busy flow process CPU the stages need)."""
    results: dict[str, StageResult] = {}
    running: dict[str, tuple] = {}
    finished: queue.Queue[str] = queue.Queue()
    waiting = dict(stages)  # in dependency order, so one pass sees every upstream result first
    slots = threading.Semaphore(params.max_parallel)
    while waiting or running:
        for name, info in list(waiting.items()):
            upstream = [results.get(u) for u in info.upstream if u in stages]
            bad = next((r.stage for r in upstream if r is not None and r.status in ("failed", "blocked")), None)
            if bad:
                results[name] = StageResult(name, "blocked", error=f"upstream stage {bad} did not finish")
                del waiting[name]
            elif all(r is not None for r in upstream):
                task_run = reproduce_stage.with_options(name=name, task_run_name=name,
                                                        **_retry_options(info, params.download_retries))
                future = task_run.submit(runner, info, env, slots)
                future.add_done_callback(lambda _, name=name: finished.put(name))
                running[name] = (future, time.perf_counter())
                del waiting[name]
        if not running:
            continue
        name = finished.get()
        future, started = running.pop(name)
        seconds = time.perf_counter() - started
        future.wait()  # takes the final state from the finished thread (the API may not have recorded it yet)
        if future.state.is_completed():
            results[name] = StageResult(name, future.result(), seconds)
        else:
            error = future.result(raise_on_failure=False)
            results[name] = StageResult(name, "failed", seconds, str(error).strip()[-2000:])
    return [results[name] for name in stages]


def format_summary(results: list[StageResult], wall: float) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("ran", "restored", "skipped", "failed", "blocked")}
    lines = [f"pipeline finished in {wall:.1f}s: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    for r in results:
        lines.append(f"  {r.status:<9} {r.stage:<32} {r.seconds:8.1f}s")
        if r.error:
            lines.extend(f"      {line}" for line in r.error.splitlines()[-8:])
    return "\n".join(lines)


@flow(name="lesson5-pipeline", log_prints=True)
def pipeline(targets: list[str] | None = None, max_parallel: int | None = None, root: str = ".") -> list[dict]:
    """Reproduce the DVC pipeline (or `targets` and their upstream) with independent branches in parallel."""
    from prefect.runtime import flow_run

    started = time.perf_counter()
    root = os.path.abspath(root)
    params = load_params("pipeline", PipelineParams, os.path.join(root, "params.yaml"))
    if max_parallel is not None:
        params = params.model_copy(update={"max_parallel": max_parallel})
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
            with stage_run("pipeline", "pipeline", params={**params.model_dump(), "targets": targets or "all"},
                           tags={"prefect.flow_run_id": env[FLOW_RUN_ENV]}) as parent:
                if parent.run_id:
                    env[PARENT_RUN_ENV] = parent.run_id
                results = schedule(runner, stages, params, env)
                wall = time.perf_counter() - started
                summary = format_summary(results, wall)
                counts = {f"stages_{s}": sum(r.status == s for r in results)
                          for s in ("ran", "restored", "skipped", "failed", "blocked")}
                parent.log_metrics({"wall_seconds": wall, **counts})
                parent.log_text(summary, "pipeline_summary.txt")
    finally:
        os.chdir(cwd)
    get_run_logger().info("\n%s", summary)
    failed = [r for r in results if r.status in ("failed", "blocked")]
    if failed:
        raise StageFailed(f"{len(failed)} stage(s) failed or were blocked: " + ", ".join(r.stage for r in failed))
    return [asdict(r) for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="stages to reproduce with their upstream (default: all)")
    parser.add_argument("--max-parallel", type=int, help="override params.yaml pipeline.max_parallel")
    parser.add_argument("--root", default=".", help="the DVC repository (default: current folder)")
    args = parser.parse_args(argv)
    # MLflow's import and store set-up overlap Prefect's start-up (an ephemeral server takes ~10 s to answer)
    threading.Thread(target=warm_up, args=(args.root,), name="mlflow-warm-up", daemon=True).start()
    state = pipeline(args.targets or None, args.max_parallel, args.root, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
