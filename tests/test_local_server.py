"""The project's local Prefect server (`make run` starts it once and reuses it; `make stop` ends it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from pipelines.server import free_port, healthy, running
from tests.conftest import REPO
from tests.factories.toy import CHAIN, toy_project


def server(home, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.server", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_a_state_file_left_by_a_dead_server_is_not_taken_for_a_running_one(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    url = f"http://127.0.0.1:{free_port()}/api"
    (tmp_path / "local-server.json").write_text(json.dumps({"pid": int(dead.stdout), "url": url}))
    assert running(tmp_path) is None
    (tmp_path / "local-server.json").write_text(json.dumps({"pid": os.getpid(), "url": url}))  # alive, not serving
    assert running(tmp_path) is None


@pytest.mark.slow
def test_the_first_run_starts_the_server_later_ones_reuse_it_and_stop_ends_it(tmp_path, mlflow_store):
    home = tmp_path / "prefect"
    first = server(home, "url")
    assert first.returncode == 0, first.stderr
    api = first.stdout.strip()
    assert "starting the project's Prefect server" in first.stderr and healthy(api)
    pid = json.loads((home / "local-server.json").read_text())["pid"]

    again = server(home, "url")
    assert again.stdout.strip() == api and "starting" not in again.stderr  # reused, not restarted
    assert json.loads((home / "local-server.json").read_text())["pid"] == pid

    root = toy_project(tmp_path / "toy", CHAIN)
    flow = subprocess.run(
        [sys.executable, "-m", "pipelines.flow", "--root", str(root)],
        cwd=root,
        env={**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": mlflow_store},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert flow.returncode == 0, flow.stderr[-3000:]
    request = urllib.request.Request(f"{api}/flow_runs/count", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response) == 1  # the run is in the project's server, where the Prefect UI shows it

    stopped = server(home, "stop")
    assert "stopped the Prefect server" in stopped.stdout
    assert not healthy(api) and not (home / "local-server.json").exists()
    assert "no Prefect server of this project was running" in server(home, "stop").stdout
