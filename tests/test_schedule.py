"""docs/operations.md's schedules and work-pool recipes as written, on real local Prefect servers: a served
deployment whose scheduled runs execute and finish, a deployment that a work-pool worker runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import mlflow
import psutil
import pytest

from pipelines.server import healthy
from stages.common.tracking_store import ensure_store
from tests.conftest import REPO, UNUSED_SERVER_SERVICES, VENV_BIN
from tests.factories.docs import code_blocks, commands, substituted
from tests.factories.movielens import movielens_zip

pytestmark = pytest.mark.slow
OPERATIONS = REPO / "docs" / "operations.md"


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


def test_scheduled_runs_execute_and_a_rerun_trains_nothing(project, http_server):
    """docs/operations.md's schedules recipe as written, outside make (no PREFECT_API_URL, no PREFECT_HOME), its
    hourly line every 10 s for one stage: `serve` starts the project's Prefect server in the project's .prefect/,
    two scheduled runs execute and finish on it, the second without running a stage; `make run`'s lookup reuses
    the server; once serve is stopped, the recipe's `make stop` ends the server and nothing serve started is left."""
    url, sha = http_server.add("ml-latest-small.zip", movielens_zip())
    project.set_params({"movielens.sources.ml-latest-small": {"url": url, "sha256": sha}})
    outside_make = {k: v for k, v in project.env.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    env = {**outside_make, **UNUSED_SERVER_SERVICES, "PREFECT_UI_ENABLED": "false"}  # the suite's server settings
    serve_line, stop_line = schedules_recipe()
    home, log = project.root / ".prefect", project.root.parent / "serve.log"  # the project's PREFECT_HOME, as make's
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            ["bash", "-c", f"exec {serve_line}"], cwd=project.root, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 420
        runs = []
        while time.monotonic() < deadline and len(runs) < 2:
            assert serve.poll() is None, f"the serve process exited:\n{log.read_text()[-3000:]}"
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

        # on the project's own server, which serve started
        state = json.loads((home / "local-server.json").read_text())
        assert "starting the project's Prefect server" in log.read_text()
        server_env = {"PREFECT_API_URL": state["url"]}
        # the flow ends its MLflow run before Prefect records the flow run's final state: wait for the state
        states = deployment_states(server_env, "lesson5-scheduled", serve, deadline, lambda s: s.count("COMPLETED") > 1)
        assert states.count("COMPLETED") >= 2, f"deployment run states: {states}"
        lookup = subprocess.run(  # `make run`'s lookup, outside make
            [sys.executable, "-m", "pipelines.server", "url"], cwd=project.root, env=env, capture_output=True, text=True
        )
        assert lookup.stdout.strip() == state["url"] and "starting" not in lookup.stderr  # reused, not restarted

        started = psutil.Process(serve.pid).children(recursive=True)  # the server, the runs' processes
        assert state["pid"] in [p.pid for p in started]
        stop(serve)  # as by Ctrl-C: the server outlives serve, as `make run`'s outlives the run
        assert healthy(state["url"])
        stopped = subprocess.run(
            ["bash", "-c", stop_line, "--", str(VENV_BIN)], cwd=project.root, env=env, capture_output=True, text=True
        )
        assert "stopped the Prefect server" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not healthy(state["url"]) and not (home / "local-server.json").exists()
        assert [p.pid for p in started if alive(p)] == [], "processes serve started outlived `make stop`"
    finally:
        stop(serve)
        subprocess.run([sys.executable, "-m", "pipelines.server", "stop"], cwd=project.root, env=env, timeout=120)


def schedules_recipe() -> tuple[str, str]:
    """The schedules recipe's hourly `serve` line, every 10 s for movielens_prepare, and its `make stop` line, to
    run with this checkout's Makefile and venv (BIN: the bash argument $1) in a copy of the project."""
    (block,) = code_blocks(OPERATIONS, "Schedules", "bash")
    lines = commands(block)
    (serve,) = [line for line in lines if "--interval" in line]
    serve = substituted(
        serve, {".venv/bin/python": sys.executable, "3600": "10", "movielens_analyze": "movielens_prepare"}
    )
    (stop_line,) = [line for line in lines if line.startswith("make stop")]
    return serve, substituted(stop_line, {"make stop": f'make -f {REPO / "Makefile"} BIN="$1" stop'})


def alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a killed child stays one until its parent reaps it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_work_pool_worker_runs_the_deployed_pipeline(project, http_server, prefect_api):
    """docs/operations.md's work-pool recipe as written, from a copy of the project on the test run's server (which
    pipelines.server started, as the recipe's first line does): create a process pool, deploy, run the deployment
    (for one stage: `--params`), and a worker (as on another machine) picks the run up and finishes it."""
    url, sha = http_server.add("ml-latest-small.zip", movielens_zip())
    project.set_params({"movielens.sources.ml-latest-small": {"url": url, "sha256": sha}})
    env = {**project.env, "PREFECT_API_URL": prefect_api}
    (block,) = code_blocks(OPERATIONS, "Prefect work pools and workers", "bash")
    run_now = "lesson5-pipeline/nightly"
    one_stage = f"""{run_now} --params '{{"targets": ["movielens_prepare"]}}'"""
    lines = commands(substituted(block, {".venv/bin/prefect": f"{sys.executable} -m prefect", run_now: one_stage}))
    exports, (create, deploy, worker_line, run_line) = lines[:2], lines[2:]
    assert all(line.startswith("export PREFECT_API_URL=") for line in exports), exports

    def shell(line: str) -> None:
        result = subprocess.run(
            ["bash", "-c", line], cwd=project.root, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{line}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"

    for line in (create, deploy, run_line):
        shell(line)
    worker = subprocess.Popen(
        ["bash", "-c", f"exec {worker_line}"],
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
