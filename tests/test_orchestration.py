"""The Prefect flow over a toy dvc.yaml of shell stages: the graph in Prefect, max_parallel, a failing branch,
a manual `dvc repro` meanwhile, a kill mid-run; against the session's Prefect server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, copy_mlflow_store
from tests.factories.toy import CHAIN, toy_project, write_file_stage

pytestmark = pytest.mark.slow
SLOW = 8  # seconds a stage sleeps, for the test to act while it runs


@pytest.fixture
def flow_env(prefect_api, tmp_path, empty_mlflow_store) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PYTHONPATH": str(REPO),
        "MLFLOW_TRACKING_URI": copy_mlflow_store(empty_mlflow_store, tmp_path),
    }


def run_flow(root, env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.flow", "--root", str(root), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"flow failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def stale(root, *targets: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", *targets],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out or "{}")


def test_a_failing_branch_stops_only_its_downstream_and_the_summary_says_why(flow_env, tmp_path):
    stages = {
        **CHAIN,
        "broken": write_file_stage("data/broken.txt", fail="no space left on the toy device"),
        "after_broken": write_file_stage("data/after.txt", deps=("data/broken.txt",)),
        "stuck": write_file_stage("data/stuck.txt", sleep=600),
    }
    root = toy_project(tmp_path / "toy", stages, timeout_minutes={"stuck": 0.05})  # 3 s
    result = run_flow(root, flow_env, check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 1
    assert "failed    broken" in log and "no space left on the toy device" in log
    assert "blocked   after_broken" in log and "upstream stage broken did not finish" in log
    assert "failed    stuck" in log and "still running after its timeout of 0.05 min" in log
    assert all(f"ran       {name}" in log for name in CHAIN)
    assert stale(root, *CHAIN) == {}

    again = run_flow(root, flow_env, *CHAIN)  # nothing changed: every check, no command
    assert "4 skipped" in again.stdout + again.stderr and "ran " not in again.stdout + again.stderr

    # in the Prefect UI: the failing stage's own output in its task's log, the summary as a table artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: flow_env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        runs = [run for run in client.read_flow_runs() if run.parameters.get("root") == str(root)]
        first = min(runs, key=lambda run: run.created).id
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[first])))
        (artifact,) = client.read_artifacts(  # the summary (Prefect also records the failed run's result)
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[first]),
                key=ArtifactFilterKey(any_=["lesson5-pipeline-summary"]),
            )
        )
    assert any(log.task_run_id and log.message == "no space left on the toy device" for log in logs)
    table = {row["stage"]: row for row in json.loads(artifact.data)}
    assert table["broken"]["status"] == "failed" and "no space left" in table["broken"]["error"]
    assert table["after_broken"]["status"] == "blocked" and table["first"]["status"] == "ran"
    assert artifact.key == "lesson5-pipeline-summary" and "[MLflow parent run " in artifact.description
    assert "](http://127.0.0.1:5000/#/experiments/" in artifact.description  # a link into `make ui`


def test_the_prefect_run_graph_is_the_dvc_graph(flow_env, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def task_runs_of_each_flow_run() -> list[list]:
        with temporary_settings({PREFECT_API_URL: flow_env["PREFECT_API_URL"]}), get_client(sync_client=True) as c:
            flow_runs = sorted(
                (run for run in c.read_flow_runs() if run.parameters.get("root") == str(root)),
                key=lambda run: run.start_time,
            )
            return [c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id]))) for r in flow_runs]

    root = toy_project(tmp_path / "toy", CHAIN)
    run_flow(root, flow_env)
    (task_runs,) = task_runs_of_each_flow_run()
    names = {run.id: run.name for run in task_runs}
    upstream = {run.name: {names[i.id] for i in run.task_inputs.get("wait_for", [])} for run in task_runs}
    assert upstream == {"first": set(), "second": {"first"}, "third": {"second"}, "apart": set()}

    # a rerun: stages up to date with all their upstream are reported skipped without a task run; the changed
    # stage and its downstream are task runs (`second` comes back from the run-cache, the same: `third` is then
    # up to date)
    (root / "data/second.txt").unlink()
    log = run_flow(root, flow_env)
    assert "1 restored, 3 skipped" in log.stdout + log.stderr
    assert "2 of 4 stages up to date with their upstream: not run" in log.stdout + log.stderr
    assert sorted(run.name for run in task_runs_of_each_flow_run()[1]) == ["second", "third"]


def test_independent_stages_run_concurrently_up_to_max_parallel(flow_env, tmp_path):
    names = ["wide_a", "wide_b", "narrow_a", "narrow_b"]
    root = toy_project(
        tmp_path / "toy",
        {
            name: write_file_stage(f"data/{name}.json", sleep=2, record_times=True, deps=("input.txt",))
            for name in names
        },
    )

    def intervals(*stages: str) -> list[list[float]]:
        return [json.loads((root / f"data/{s}.json").read_text()) for s in stages]

    run_flow(root, flow_env, "wide_a", "wide_b", "--max-parallel", "2")
    (a_start, a_end), (b_start, b_end) = intervals("wide_a", "wide_b")
    assert a_start < b_end and b_start < a_end  # the two commands overlapped

    result = run_flow(root, flow_env, "narrow_a", "narrow_b", "--max-parallel", "1")
    (a_start, a_end), (b_start, b_end) = intervals("narrow_a", "narrow_b")
    assert a_end <= b_start or b_end <= a_start  # one after the other
    assert "waited" in result.stdout + result.stderr  # the summary shows the slot wait apart from the run time
    assert stale(root, *names) == {}


def test_manual_dvc_repro_during_a_flow_gets_a_clear_message_and_changes_nothing(flow_env, tmp_path):
    root = toy_project(tmp_path / "toy", {"slow": write_file_stage("data/manual.txt", sleep=SLOW, deps=("input.txt",))})
    flow = subprocess.Popen(
        [sys.executable, "-m", "pipelines.flow", "--root", str(root)],
        cwd=root,
        env=flow_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (_running("data/manual.txt") and _lock_held(root)):
            if flow.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the flow never held DVC's lock:\n{flow.communicate()[0][-3000:]}")
            time.sleep(0.3)
        manual = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "slow"], cwd=root, capture_output=True, text=True
        )
        assert manual.returncode != 0
        assert "Unable to acquire lock" in manual.stdout + manual.stderr
        out, _ = flow.communicate(timeout=300)
    finally:
        if flow.poll() is None:
            flow.kill()
    assert flow.returncode == 0, out[-3000:]
    assert "1 ran" in out
    assert stale(root, "slow") == {}


def test_flow_killed_mid_run_finishes_when_started_again(flow_env, tmp_path):
    stages = {"slow": write_file_stage("data/killed.txt", sleep=SLOW, deps=("input.txt",)), **CHAIN}
    root = toy_project(tmp_path / "toy", stages)
    flow = subprocess.Popen(
        [sys.executable, "-m", "pipelines.flow", "--root", str(root)],
        cwd=root,
        env=flow_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not _running("data/killed.txt"):
        assert time.monotonic() < deadline and flow.poll() is None, "the slow stage never started"
        time.sleep(0.3)
    os.killpg(flow.pid, signal.SIGKILL)  # the flow and the stage it runs, as a crash or `kill -9` of the job
    flow.wait()
    assert not (root / "data/killed.txt").exists()
    again = run_flow(root, flow_env)
    assert "pipeline finished" in again.stdout + again.stderr
    assert stale(root) == {}
    assert (root / "data/killed.txt").read_text() == "done"


def _lock_held(root) -> bool:
    """True while some process holds DVC's repo lock (zc.lockfile takes an flock on it)."""
    import fcntl

    with open(root / ".dvc/tmp/lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _running(needle: str) -> bool:
    out = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout  # whole command lines
    return needle in out
