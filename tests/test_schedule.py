"""A real local Prefect server, a served deployment, and scheduled runs that execute and finish."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

from benchmarks.common import local_prefect_server
from tests.factories.movielens import movielens_zip

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def prefect_server(project, tmp_path):
    """A real `prefect server start` on 127.0.0.1 (SQLite in tmp_path); yields the env that points at it."""
    env = {**project.env, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    with local_prefect_server(env, tmp_path) as api:
        yield {**env, "PREFECT_API_URL": api}


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def api_post(env: dict, path: str, body: dict) -> list | dict:
    request = urllib.request.Request(f"{env['PREFECT_API_URL']}/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def finished_pipeline_runs(project) -> list:
    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lesson5-pipeline")
    if not experiment:
        return []
    return [r for r in client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
            if r.info.status == "FINISHED"]


def test_scheduled_runs_execute_and_a_rerun_trains_nothing(project, http_server, tmp_path):
    url, sha = http_server.add("ml-latest-small.zip", movielens_zip())
    project.set_params({"movielens.sources.ml-latest-small": {"url": url, "sha256": sha}})
    with prefect_server(project, tmp_path) as env:
        serve = subprocess.Popen([sys.executable, "-m", "pipelines.serve", "--interval", "20",
                                  "--targets", "movielens_prepare"], cwd=project.root, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
            assert second["stages_ran"] == 0 and second["stages_skipped"] == 2  # unchanged inputs: nothing runs
            assert runs[1].data.tags["prefect.flow_run_id"]
            completed = api_post(env, "flow_runs/filter",
                                 {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
            assert len([r for r in completed if r["deployment_id"]]) >= 2
        finally:
            stop(serve)


def test_a_work_pool_worker_runs_the_deployed_pipeline(project, http_server, tmp_path):
    """The README's work-pool commands: create a process pool, `prefect deploy` from the project root,
    `prefect deployment run`, and a worker (as on another machine) picks the run up and finishes it."""
    url, sha = http_server.add("ml-latest-small.zip", movielens_zip())
    project.set_params({"movielens.sources.ml-latest-small": {"url": url, "sha256": sha}})
    prefect = [sys.executable, "-m", "prefect"]
    with prefect_server(project, tmp_path) as env:
        def cli(*args: str) -> str:
            result = subprocess.run([*prefect, *args], cwd=project.root, env=env, capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            return result.stdout

        cli("work-pool", "create", "lesson5", "--type", "process")
        cli("--no-prompt", "deploy", "pipelines/flow.py:pipeline", "--name", "nightly", "--pool", "lesson5",
            "--cron", "0 3 * * *", "--concurrency-limit", "1")
        cli("deployment", "run", "lesson5-pipeline/nightly", "--params", '{"targets": ["movielens_prepare"]}')
        worker = subprocess.Popen([*prefect, "worker", "start", "--pool", "lesson5", "--limit", "1"],
                                  cwd=project.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 420
            states = []
            while time.monotonic() < deadline:
                assert worker.poll() is None, "the worker exited"
                runs = api_post(env, "flow_runs/filter", {})
                states = [r["state_type"] for r in runs if r["deployment_id"]]
                if any(s in ("COMPLETED", "FAILED", "CRASHED") for s in states):
                    break
                time.sleep(3)
            assert "COMPLETED" in states, f"deployment run states: {states}"
        finally:
            stop(worker)
    (run,) = finished_pipeline_runs(project)
    assert run.data.metrics["stages_ran"] == 2 and run.data.metrics["stages_failed"] == 0
    assert project.dvc("status", "movielens_prepare").stdout.strip().endswith("Data and pipelines are up to date.")
