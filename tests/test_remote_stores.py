"""Beyond one machine: an MLflow tracking server on PostgreSQL with an artifact store, and a DVC remote.

docs/operations.md's recipes run as written, on real servers on loopback: a PostgreSQL cluster from the Debian
packages (scripts/ensure-postgres.sh), `mlflow server` from the venv. Everything binds 127.0.0.1; what the recipes
write lives in temporary folders, and the cluster is dropped afterwards.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.server import free_port
from tests.conftest import REPO, VENV_BIN
from tests.factories.docs import code_blocks, commands, substituted
from tests.factories.movielens import small_movielens

pytestmark = pytest.mark.slow
SERVER_START_TIMEOUT = 300  # s: a cold `mlflow server` took ~160 s on this 2-core machine under heavy load
OPERATIONS = REPO / "docs" / "operations.md"
PASSWORD = "lesson5-test-pw"


def recipe(heading: str, replacements: dict[str, str]) -> list[str]:
    """The commands of the bash block under `heading` in docs/operations.md, with these replacements."""
    (block,) = code_blocks(OPERATIONS, heading, "bash")
    return commands(substituted(block, replacements))


def in_project_root(folder: Path) -> Path:
    """`folder` set up as the recipes' project root: its scripts/ and .venv/ are this checkout's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scripts").symlink_to(REPO / "scripts")
    (folder / ".venv").symlink_to(VENV_BIN.parent)
    return folder


def as_root() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


@pytest.fixture
def postgres(tmp_path):
    """The recipe's PostgreSQL lines: a cluster of the test's own on a free port, created and started by
    scripts/ensure-postgres.sh with its role and database (the password on stdin, as no terminal is attached),
    and the ~/.pgpass line in a HOME of the test's own. Yields (the recipe's remaining commands, its environment);
    the cluster is dropped afterwards."""
    if shutil.which("pg_createcluster") is None:
        pytest.skip("the recipe uses Debian's postgresql-common: run scripts/ensure-postgres.sh on Debian/Ubuntu")
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("the recipe creates a system PostgreSQL cluster: it needs root or passwordless sudo")
    pg_port, mlflow_port, cluster = free_port(), free_port(), f"lesson5_test_{os.getpid()}"
    steps = recipe(
        "MLflow tracking server with PostgreSQL and an artifact store",
        {
            "--cluster main": f"--cluster {cluster}",
            "5432": str(pg_port),
            "5000": str(mlflow_port),
            "<password>": PASSWORD,
            "/srv/mlflow-artifacts": str(tmp_path / "mlflow-artifacts"),
        },
    )
    root, home = in_project_root(tmp_path / "root"), tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    try:
        for step in steps[:2]:  # the cluster, role and database; ~/.pgpass
            done = subprocess.run(
                ["bash", "-c", step],
                cwd=root,
                env=env,
                input=f"{PASSWORD}\n{PASSWORD}\n",
                capture_output=True,
                text=True,
                timeout=300,
                start_new_session=True,  # no controlling terminal: createuser --pwprompt reads stdin
            )
            assert done.returncode == 0, f"{step}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        yield steps[2:], env
    finally:
        clusters = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout.splitlines()
        for version, name, *_ in (line.split() for line in clusters):
            if name == cluster:
                subprocess.run([*as_root(), "pg_dropcluster", "--stop", version, name], check=True, timeout=120)


class MlflowServer:
    """The recipe's `mlflow server` line, started; its URL from the recipe's `export MLFLOW_TRACKING_URI=` line."""

    def __init__(self, command: str, export: str, env: dict[str, str], cwd: Path, log: Path):
        assert command.startswith(".venv/bin/mlflow server "), command
        self.url = export.removeprefix("export MLFLOW_TRACKING_URI=").split()[0]
        args = shlex.split(command, comments=True)
        self.backend = args[args.index("--backend-store-uri") + 1]
        self.artifacts = Path(args[args.index("--artifacts-destination") + 1])
        self.log = log
        # one uvicorn worker (the default is 4) and no background job workers: the same server, less CPU
        env = {**env, "MLFLOW_WORKERS": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"mlflow server exited ({self.process.returncode}):\n{self.log.read_text()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(1)
        raise AssertionError(
            f"mlflow server not healthy after {SERVER_START_TIMEOUT} s:\n{self.log.read_text()[-4000:]}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def mlflow_server(postgres, tmp_path):
    """The recipe's server, started; call `wait_healthy()` before using it (start-up overlaps other work)."""
    (command, export), env = postgres
    assert export.startswith("export MLFLOW_TRACKING_URI="), export
    server = MlflowServer(command, export, env, tmp_path / "root", tmp_path / "mlflow-server.log")
    try:
        yield server
    finally:
        server.stop()


def test_stage_tracks_to_an_mlflow_server_on_postgres(project, http_server, postgres, mlflow_server, tmp_path):
    import psycopg
    from mlflow.tracking import MlflowClient

    small_movielens(project, http_server)
    project.dvc("repro", "movielens_prepare")  # while the server starts
    mlflow_server.wait_healthy()
    project.env["MLFLOW_TRACKING_URI"] = mlflow_server.url
    project.dvc("repro", "movielens_train@dot")

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("lesson5-movielens")
    runs = client.search_runs([experiment.experiment_id], "tags.`dvc.stage` = 'movielens_train@dot'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert (run.data.params["kind"], run.data.params["factors"], run.data.params["epochs"]) == ("dot", "4", "2")
    summary = json.loads((project.root / "data/movielens/metrics/train_dot.json").read_text())
    assert run.data.metrics["val_mse"] == pytest.approx(summary["best_val_mse"])  # the saved model's
    assert len(client.get_metric_history(run.info.run_id, "val_mse")) == 3  # one point per epoch, then the model's

    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/curves.png"]
    fetched = Path(client.download_artifacts(run.info.run_id, "plots/curves.png", str(tmp_path)))
    assert fetched.read_bytes() == (project.root / "data/movielens/plots/dot_curves.png").read_bytes()
    # the server stored the artifact in its artifact store, and the run in PostgreSQL (the recipe's role, password
    # from the recipe's ~/.pgpass)
    assert list(mlflow_server.artifacts.rglob("curves.png"))
    _, env = postgres
    with psycopg.connect(mlflow_server.backend, passfile=str(Path(env["HOME"]) / ".pgpass")) as conn:
        stored = conn.execute("SELECT name, status FROM runs WHERE run_uuid = %s", (run.info.run_id,)).fetchone()
        listens = conn.execute("SHOW listen_addresses").fetchone()
    assert stored == ("movielens_train@dot", "FINISHED")
    assert listens == ("127.0.0.1",)  # the recipe's cluster: loopback only


def test_dvc_local_remote_push_wipe_pull(project, http_server, tmp_path):
    small_movielens(project, http_server)
    project.dvc("repro", "movielens_prepare")
    outputs = [project.root / "data/movielens" / name for name in ("raw", "prepared")]  # the chain's DVC outs

    def contents() -> dict[str, bytes]:
        return {
            str(p.relative_to(project.root)): p.read_bytes() for out in outputs for p in out.rglob("*") if p.is_file()
        }

    before = contents()
    assert {"data/movielens/raw/ml-latest-small/ratings.csv", "data/movielens/prepared/ratings.parquet"} <= set(before)

    remote = tmp_path / "dvc-remote"
    activate, add_local, *_ = recipe("DVC remote storage", {"/mnt/nas/lesson5-dvc": str(remote)})
    assert activate.startswith("source .venv/bin/activate"), activate  # the venv's bin first on PATH: project.env
    project.run("bash", "-c", add_local)  # the local folder's line as written
    chain = ("--with-deps", "movielens_prepare")  # only this chain ran: the other stages have nothing to push
    project.dvc("push", *chain)
    assert any(p.is_file() for p in (remote / "files/md5").rglob("*"))

    # a machine with the code and dvc.lock but no data: no cache, no outputs
    shutil.rmtree(project.root / ".dvc/cache")
    for out in outputs:
        shutil.rmtree(out)
    assert "deleted" in project.dvc("status", *chain).stdout
    project.dvc("pull", *chain)
    assert contents() == before
    assert "Data and pipelines are up to date" in project.dvc("status", *chain).stdout
    assert "in sync" in project.dvc("status", "--cloud", *chain).stdout
