"""Beyond one machine: an MLflow tracking server on PostgreSQL with an artifact store, and a DVC remote.

Real servers on loopback: PostgreSQL from the Debian package (scripts/ensure-postgres.sh installs it),
`mlflow server` from the venv. Everything binds 127.0.0.1 and lives in temporary folders.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.server import free_port
from tests.conftest import VENV_BIN
from tests.factories.movielens import small_movielens

pytestmark = pytest.mark.slow
SERVER_START_TIMEOUT = 300  # s: a cold `mlflow server` took ~160 s on this 2-core machine under heavy load


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin), else initdb on PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in versions:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    return Path(initdb).resolve().parent if initdb and pg_ctl else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster on a free loopback port; yields the database URI."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on "
            "PATH: run scripts/ensure-postgres.sh (installs Debian's postgresql package)"
        )
    # PostgreSQL refuses to run as root: run the server as `nobody` in a folder it owns
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="lesson5-pg-"))
    if as_user:
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
    data, port = home / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True, timeout=180)

    pg("initdb", "-D", str(data), "-U", "lesson5", "--auth=trust", "-E", "UTF8", "--no-locale")
    # -F (no fsync): a test database that is thrown away
    pg(
        "pg_ctl",
        "-D",
        str(data),
        "-l",
        str(home / "server.log"),
        "-w",
        "-t",
        "120",
        "-o",
        f"-h 127.0.0.1 -p {port} -k {home} -F",
        "start",
    )
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "lesson5", "mlflow")
        yield f"postgresql://lesson5@127.0.0.1:{port}/mlflow"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


class MlflowServer:
    def __init__(self, backend: str, artifacts: Path, log: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.artifacts, self.log = artifacts, log
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    str(VENV_BIN / "mlflow"),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    self.url.rsplit(":", 1)[1],
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    backend,
                    "--artifacts-destination",
                    str(artifacts),
                ],
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
    """A started `mlflow server`; call `wait_healthy()` before using it (start-up overlaps other work)."""
    server = MlflowServer(postgres, tmp_path / "mlflow-artifacts", tmp_path / "mlflow-server.log")
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
    # the server stored the artifact in its artifact store, and the run in PostgreSQL
    assert list(mlflow_server.artifacts.rglob("curves.png"))
    with psycopg.connect(postgres) as conn:
        stored = conn.execute("SELECT name, status FROM runs WHERE run_uuid = %s", (run.info.run_id,)).fetchone()
    assert stored == ("movielens_train@dot", "FINISHED")


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
    project.dvc("remote", "add", "-d", "shared", str(remote))
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
