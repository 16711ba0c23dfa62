"""A real local Prefect server, a served deployment, and scheduled runs that execute and finish."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

from stages.common.tracking_store import ensure_store
from tests.factories.movielens import movielens_zip

pytestmark = pytest.mark.slow


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def api(env: dict, path: str, body: dict | None = None) -> list | dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}/{path}",
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def deployment_runs(env: dict, flow: str, deployment: str) -> list[dict]:
    """The flow runs of one deployment (the session's server also holds other tests' runs)."""
    deployment_id = api(env, f"deployments/name/{flow}/{deployment}")["id"]
    return api(env, "flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})


def deployment_states(env: dict, deployment: str, process: subprocess.Popen, deadline: float, done) -> list[str]:
    """The state types of a deployment's flow runs, polled until `done(states)` holds, a run failed or crashed, or
    `deadline` (time.monotonic()) passes; `process` (the serve process or worker running them) must stay up."""
    while True:
        assert process.poll() is None, f"exited: {' '.join(process.args[1:])}"
        states = [r["state_type"] for r in deployment_runs(env, "lesson5-pipeline", deployment)]
        if done(states) or {"FAILED", "CRASHED"} & set(states) or time.monotonic() > deadline:
            return states
        time.sleep(2)


def finished_pipeline_runs(project) -> list:
    ensure_store(project.env["MLFLOW_TRACKING_URI"])  # the served flow may be creating it right now
    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lesson5-pipeline")
    if not experiment:
        return []
    return [
        r
        for r in client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
        if r.info.status == "FINISHED"
    ]


def test_scheduled_runs_execute_and_a_rerun_trains_nothing(project, http_server, prefect_api):
    url, sha = http_server.add("ml-latest-small.zip", movielens_zip())
    project.set_params({"movielens.sources.ml-latest-small": {"url": url, "sha256": sha}})
    env = {**project.env, "PREFECT_API_URL": prefect_api}
    serve = subprocess.Popen(
        [sys.executable, "-m", "pipelines.serve", "--interval", "10", "--targets", "movielens_prepare"],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 420
        runs = []
        while time.monotonic() < deadline and len(runs) < 2:
            assert serve.poll() is None, "the serve process exited"
            time.sleep(3)
            runs = finished_pipeline_runs(project)
        assert len(runs) >= 2, f"only {len(runs)} scheduled run(s) finished"
        first, second = runs[0].data.metrics, runs[1].data.metrics
        assert first["stages_ran"] == 2 and first["stages_failed"] == 0
        # run time, slot wait and CPU time apart per stage, with the load they ran under
        ran = {"movielens_download", "movielens_prepare"}
        assert {f"{what}_seconds.{s}" for s in ran for what in ("run", "wait", "cpu")} <= set(first)
        assert all(0 < first[f"cpu_seconds.{s}"] for s in ran)
        assert first["loadavg_1m"] >= 0 and "wait_seconds.movielens_prepare" not in second
        assert second["stages_ran"] == 0 and second["stages_skipped"] == 2  # unchanged inputs: nothing runs
        assert runs[1].data.tags["prefect.flow_run_id"]
        # the flow ends its MLflow run before Prefect records the flow run's final state: wait for the state
        states = deployment_states(env, "lesson5-scheduled", serve, deadline, lambda s: s.count("COMPLETED") >= 2)
        assert states.count("COMPLETED") >= 2, f"deployment run states: {states}"
    finally:
        stop(serve)


def test_a_work_pool_worker_runs_the_deployed_pipeline(project, http_server, prefect_api):
    """The README's work-pool commands: create a process pool, `prefect deploy` from the project root,
    `prefect deployment run`, and a worker (as on another machine) picks the run up and finishes it."""
    url, sha = http_server.add("ml-latest-small.zip", movielens_zip())
    project.set_params({"movielens.sources.ml-latest-small": {"url": url, "sha256": sha}})
    prefect = [sys.executable, "-m", "prefect"]
    env = {**project.env, "PREFECT_API_URL": prefect_api}

    def cli(*args: str) -> str:
        result = subprocess.run(
            [*prefect, *args], cwd=project.root, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        return result.stdout

    cli("work-pool", "create", "lesson5", "--type", "process")
    cli(
        "--no-prompt",
        "deploy",
        "pipelines/flow.py:pipeline",
        "--name",
        "nightly",
        "--pool",
        "lesson5",
        "--cron",
        "0 3 * * *",
        "--concurrency-limit",
        "1",
    )
    cli("deployment", "run", "lesson5-pipeline/nightly", "--params", '{"targets": ["movielens_prepare"]}')
    worker = subprocess.Popen(
        [*prefect, "worker", "start", "--pool", "lesson5", "--limit", "1"],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        states = deployment_states(env, "nightly", worker, time.monotonic() + 420, lambda s: "COMPLETED" in s)
        assert "COMPLETED" in states, f"deployment run states: {states}"
    finally:
        stop(worker)
    (run,) = finished_pipeline_runs(project)
    assert run.data.metrics["stages_ran"] == 2 and run.data.metrics["stages_failed"] == 0
    assert project.dvc("status", "movielens_prepare").stdout.strip().endswith("Data and pipelines are up to date.")
