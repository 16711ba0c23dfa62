"""A real local Prefect server, a served deployment, and scheduled runs that execute and finish."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

from tests.factories.movielens import movielens_zip

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} not healthy after {timeout}s")


def test_scheduled_runs_execute_and_a_rerun_trains_nothing(project, http_server, tmp_path):
    url, sha = http_server.add("ml-latest-small.zip", movielens_zip())
    project.set_params({"movielens.sources.ml-latest-small": {"url": url, "sha256": sha}})
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**project.env, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve = None
    try:
        wait_healthy(f"{api}/health", server)
        serve = subprocess.Popen([sys.executable, "-m", "pipelines.serve", "--interval", "20",
                                  "--targets", "movielens_prepare"], cwd=project.root, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
        deadline = time.monotonic() + 420
        runs = []
        while time.monotonic() < deadline:
            experiment = client.get_experiment_by_name("lesson5-pipeline")
            if experiment:
                runs = [r for r in client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
                        if r.info.status == "FINISHED"]
                if len(runs) >= 2:
                    break
            assert serve.poll() is None, "the serve process exited"
            time.sleep(3)
        assert len(runs) >= 2, f"only {len(runs)} scheduled run(s) finished"
        first, second = runs[0].data.metrics, runs[1].data.metrics
        assert first["stages_ran"] == 2 and first["stages_failed"] == 0
        assert second["stages_ran"] == 0 and second["stages_skipped"] == 2  # unchanged inputs: nothing runs
        assert runs[1].data.tags["prefect.flow_run_id"]
        with urllib.request.urlopen(urllib.request.Request(
                f"{api}/flow_runs/filter", data=b'{"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}',
                headers={"Content-Type": "application/json"}, method="POST")) as response:
            completed = [r for r in json.loads(response.read()) if r["deployment_id"]]
        assert len(completed) >= 2
    finally:
        for proc in (serve, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
