"""Shared fixtures: a loopback HTTP server and throwaway copies of the project for real `dvc repro` runs."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import absl.logging
import pytest
import yaml

from harness.project import copy_project, set_nested
from harness.suite import SHARED_SERVER_CPU
from harness.threads import thread_pool_env
from stages.common import environment
from tests.factories.repository import init_repository

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

environment.apply_defaults()
os.environ.pop("LESSON5_MIRROR", None)  # tests use generated data only
# absl's logging handler (absl comes with Keras) keeps the sys.stderr of its making, under pytest the capture's
# stream, and closes it when logging is reconfigured (dictConfig closes every handler ever made: Prefect's and MLflow's
# set-up do) unless it is sys.stderr then; pytest's capture then fails with "I/O operation on closed file". The
# handler is never attached here: pointed at the process's own stderr, it has nothing of pytest's to close.
absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__
# pytest-xdist's workers share the cores: each worker's TensorFlow and stage processes get thread pools sized to its
# share, not every core's (threads that spin for a core another worker holds); variables already set are kept
for name, threads in thread_pool_env(os.cpu_count() or 1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))).items():
    os.environ.setdefault(name, threads)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (resume), plus fault injection by file name.

    `truncate.<name>`: serve only the first half of <name>'s bytes and drop the connection.
    """

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            start = int(header[6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = getattr(self.server, "cut_after", {}).get(path.name)
        if cut is not None and start < cut:
            self.wfile.write(data[start:cut])
            self.server.cut_after.pop(path.name)  # fail once, then serve normally
            self.close_connection = True
            return
        self.wfile.write(body)


class LoopbackServer:
    def __init__(self, root: Path):
        self.root = root
        handler = functools.partial(RangeHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.cut_after = {}
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def add(self, name: str, data: bytes) -> tuple[str, str]:
        """Serve `data` as `name`; returns (url, sha256)."""
        (self.root / name).write_bytes(data)
        return self.url(name), hashlib.sha256(data).hexdigest()

    def fail_once_after(self, name: str, n_bytes: int) -> None:
        self.httpd.cut_after[name] = n_bytes

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server(tmp_path_factory):
    server = LoopbackServer(tmp_path_factory.mktemp("www"))
    yield server
    server.close()


class Project:
    """A copy of the project (code, dvc.yaml, params.yaml) in a temporary folder, with its own DVC and MLflow state."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache"),
            "PYTHONPATH": str(root),
        }
        self.env.pop("LESSON5_MIRROR", None)

    @property
    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, updates: dict[str, Any]) -> None:
        params = self.params
        for key, value in updates.items():
            set_nested(params, key, value)
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def run(self, *args: str, check: bool = True, timeout: float = 1200) -> subprocess.CompletedProcess:
        result = subprocess.run(
            list(args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(VENV_BIN / "dvc"), *args, check=check)


def new_project(root: Path, mlflow_store: Path) -> Project:
    """A fresh copy of the project with its own git repository, DVC set-up and an empty MLflow store."""
    copy_project(root)
    proj = Project(root)
    init_repository(root)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # the project's settings: linked cache
    copy_mlflow_store(mlflow_store, root)
    return proj


def copy_mlflow_store(store: Path, folder: Path) -> str:
    """`store` copied to <folder>/mlflow.db, its Default experiment's artifacts in <folder>/mlruns as if the store had
    been made there; its tracking URI."""
    shutil.copy(store, folder / "mlflow.db")
    with contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(folder / "mlruns/0"),))
    return f"sqlite:///{folder / 'mlflow.db'}"


def clone_project(source: Project, root: Path) -> Project:
    """A copy of a project in any state (outputs, dvc.lock, DVC cache, MLflow store), to change without touching it."""
    shutil.copytree(source.root, root, symlinks=True)
    return Project(root)


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store holding its schema only, as the first stage's `ensure_store` creates it, made once per
    worker: its migrations take seconds of CPU, which every project would otherwise pay again. (Creating a store,
    also by processes at once, is tested on its own in tests/test_faults.py.)"""
    from stages.common.tracking_store import ensure_store

    database = tmp_path_factory.mktemp("empty-mlflow-store") / "mlflow.db"
    ensure_store(f"sqlite:///{database}")
    return database


@pytest.fixture
def mlflow_store(tmp_path, empty_mlflow_store) -> str:
    """The tracking URI of an empty store of the test's own, <tmp_path>/mlflow.db (a copy: no migrations to pay)."""
    return copy_mlflow_store(empty_mlflow_store, tmp_path)


@pytest.fixture
def project(tmp_path, empty_mlflow_store) -> Project:
    return new_project(tmp_path / "project", empty_mlflow_store)


# Credentials a user may have in the environment: the session's chain runs with them, and tests/test_security.py
# checks that none reaches a log, the MLflow store, an artifact, dvc.lock or the DVC cache.
FAKE_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "fakeAwsSecret-7d1c9e2b",
    "MLFLOW_TRACKING_TOKEN": "fakeMlflowToken-4f8a0b6c",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKE12345678",
    "HF_TOKEN": "hf_fakeHuggingFace-93e1",
}


def kill_when_backed_up(project: Project, stage: str, ready: Callable[[Path], bool]) -> None:
    """`dvc repro <stage>` killed with SIGKILL (DVC and the stage process under it) a little after `ready(the stage's
    backup folder, .cache/backup/<stage>)` first holds."""
    backup = project.root / ".cache" / "backup" / stage
    proc = subprocess.Popen(
        [str(VENV_BIN / "dvc"), "repro", stage],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not ready(backup):
            assert proc.poll() is None, f"{stage} ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.4)  # into the next epoch
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def backed_up_epochs(backup: Path) -> int:
    """Epochs held by a Keras resume backup (stages.common.training.resume_callbacks); 0 when none."""
    logs = list(backup.glob("*/epoch_logs.json"))
    return len(json.loads(logs[0].read_text())) if logs else 0


def stage_runs_by_status(project: Project, workload: str, stage: str) -> dict[str, list]:
    """The project's MLflow runs of one stage, by status (RUNNING, FINISHED, KILLED, ...)."""
    import mlflow

    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(f"lesson5-{workload}")
    by_status: dict[str, list] = {}
    for run in client.search_runs([experiment.experiment_id], f"tags.`dvc.stage` = '{stage}'"):
        by_status.setdefault(run.info.status, []).append(run)
    return by_status


@pytest.fixture(scope="session")
def movielens_chain(tmp_path_factory, prefect_api, empty_mlflow_store) -> Project:
    """The tiny MovieLens chain (all 10 stages, generated ratings) reproduced once per test run by the Prefect flow,
    with FAKE_SECRETS in its environment; the flow's output is kept as `flow_log`. Under pytest-xdist the first
    worker to need it builds it and the others wait for it (a file lock in the run's shared temporary folder).
    Tests only read it; a test that changes anything works on a `clone_project` of it."""
    from filelock import FileLock

    from tests.factories.movielens import TARGETS, small_movielens

    shared = run_folder(tmp_path_factory)
    root, done = shared / "movielens-chain" / "project", shared / "movielens-chain" / "flow.log"
    with FileLock(str(shared / "movielens-chain.lock")):
        if not done.exists():
            server = LoopbackServer(tmp_path_factory.mktemp("www-movielens"))
            try:
                proj = new_project(root, empty_mlflow_store)
                small_movielens(proj, server)
                proj.env.update(FAKE_SECRETS, PREFECT_API_URL=prefect_api)
                flow = proj.run(sys.executable, "-m", "pipelines.flow", *TARGETS)
            finally:
                server.close()  # the chain's download is done: its clones find it up to date
            done.write_text(flow.stdout + flow.stderr)
    proj = Project(root)
    proj.env["PREFECT_API_URL"] = prefect_api
    proj.flow_log = done.read_text()
    return proj


def run_folder(tmp_path_factory) -> Path:
    """The test run's temporary folder: under pytest-xdist, the folder above each worker's own, which all share."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


PREFECT_SERVER_HOME = "prefect-server"  # the run's Prefect server's PREFECT_HOME, in the run's folder


# The server's loop services no test uses (automations, late or paused runs, stale workers and leases): off, they
# save a quarter of an idle server's CPU (2.4 CPU s a minute with them, 1.8 without, measured side by side). The
# scheduler, and the event and task-run recorders that put task runs into the run graph, stay on.
UNUSED_SERVER_SERVICES = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in (
        "CANCELLATION_CLEANUP",
        "CLEANUP_RECONCILER",
        "FOREMAN",
        "LATE_RUNS",
        "PAUSE_EXPIRATIONS",
        "REPOSSESSOR",
        "TRIGGERS",
    )
}


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> str:
    """One real Prefect server (loopback, SQLite) for the whole test run, started by the first test that needs it
    with the project's own `pipelines.server` (a file lock: one for every pytest-xdist worker; an idle server still
    burns seconds of CPU a minute) and stopped when the run ends (`pytest_sessionfinish`). Flows, deployments and
    workers of every test talk to it through PREFECT_API_URL."""
    from pipelines import server

    with mock.patch.dict(os.environ, PREFECT_UI_ENABLED="false", **UNUSED_SERVER_SERVICES):
        return server.ensure(run_folder(tmp_path_factory) / PREFECT_SERVER_HOME)["url"]


SERVER_CPU = pytest.StashKey[float]()


def pytest_sessionfinish(session):
    """The run's Prefect server stopped once every worker is done: by the pytest-xdist controller, or by the only
    process of a run without workers. Its CPU seconds are taken first: started detached, it is no process's
    child by then, so pytest's own CPU time leaves it out."""
    if not hasattr(session.config, "workerinput"):
        from pipelines import server

        home = session.config._tmp_path_factory.getbasetemp() / PREFECT_SERVER_HOME
        state = server.running(home)
        if state:
            import psutil

            used = psutil.Process(state["pid"]).cpu_times()
            session.config.stash[SERVER_CPU] = used.user + used.system
        server.stop(home)


def pytest_terminal_summary(terminalreporter, config):
    if SERVER_CPU in config.stash:  # benchmarks.test_suite adds it to the tier's CPU seconds
        terminalreporter.write_line(f"{SHARED_SERVER_CPU} {config.stash[SERVER_CPU]:.1f} CPU s")


DURATIONS = Path(__file__).with_name("durations.json")


def pytest_addoption(parser):
    parser.addoption(
        "--store-durations", action="store_true", help=f"write each slow test's seconds to {DURATIONS.name}"
    )


def pytest_collection_modifyitems(items):
    """Run order for pytest-xdist's workers, which take the next test as they free up (`--maxschedchunk=1`): one
    user of the session's MovieLens chain first (it builds the chain), then the other slow tests longest first (their
    seconds in tests/durations.json: the longest-processing-time-first rule, so no long test starts last), then the
    chain's other users (the chain is ready by then: no worker waits for it), then the fast ones."""
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    chain_users = [item for item in items if "movielens_chain" in item.fixturenames]

    def rank(item) -> tuple[int, float]:
        if item.get_closest_marker("slow") is None:
            return 3, 0.0
        if item in chain_users:
            return (0 if item is chain_users[0] else 2), 0.0
        return 1, -seconds.get(item.nodeid, 0.0)

    items.sort(key=rank)


class DurationRecorder:
    """Each slow test's seconds (set-up, call and tear-down), written by `pytest --store-durations`."""

    def __init__(self, config):
        self.config, self.seconds = config, {}

    def pytest_runtest_logreport(self, report):
        if "slow" in report.keywords:
            self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session):
        if not hasattr(self.config, "workerinput"):  # the controller, which gets every worker's reports
            known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}  # a part of the suite: merged
            merged = known | {test: round(s) for test, s in self.seconds.items()}
            DURATIONS.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")


@pytest.hookimpl(trylast=True)  # after pytest's own set-up of its temporary folders
def pytest_configure(config):
    if config.getoption("--store-durations"):
        config.pluginmanager.register(DurationRecorder(config), "lesson5-durations")
    # What Prefect keeps of the tests' flows (a failed run's result, a worker's files) goes to the run's folder, not
    # to the project's .prefect/ (PREFECT_HOME in the Makefile); set before a test module imports Prefect
    os.environ["PREFECT_HOME"] = str(run_folder(config._tmp_path_factory) / "prefect-home")


def served_predictions(model_uri: str, env: dict[str, str], payload: dict) -> list:
    """`mlflow models serve` of `model_uri` (with this environment, as the README shows), one POST /invocations of
    `payload`, the predictions it answered; the server is stopped afterwards."""
    import urllib.request

    from pipelines.server import free_port

    port = free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"mlflow models serve exited: {server.stderr.read().decode()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow models serve did not answer /ping"
                time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
