"""Helpers for the benchmarks: they run on the real data (LESSON5_MIRROR) and print figures; nothing is asserted."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def require_mirror() -> str:
    mirror = os.environ.get("LESSON5_MIRROR")
    if not mirror:
        default = REPO.parent / "shared" / "data"
        if not default.is_dir():
            sys.exit("benchmarks need the real data: set LESSON5_MIRROR to the mirror folder (e.g. ../shared/data), "
                     "or run them where the dataset home sites are reachable with LESSON5_MIRROR= (empty)")
        mirror = str(default)
    mirror = os.path.abspath(mirror)  # the benchmarks run stages in throwaway copies elsewhere
    os.environ["LESSON5_MIRROR"] = mirror
    return mirror


def mean_spread(values: list[float]) -> str:
    """'mean ± sample std (min-max, n)'."""
    if len(values) == 1:
        return f"{values[0]:.4f} (n=1)"
    return (f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} "
            f"(min {min(values):.4f}, max {max(values):.4f}, n={len(values)})")


def free_port() -> int:
    """A loopback port nobody listens on (for a server to start on, or to stand for a dead one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_prefect_server(env: dict[str, str], cwd: str | os.PathLike, timeout: float = 180) -> Iterator[str]:
    """`prefect server start` on a free 127.0.0.1 port with `env` (its PREFECT_HOME holds the SQLite store);
    yields the API URL once /health answers and stops the server afterwards."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{api} not healthy after {timeout:.0f}s") from None
                time.sleep(1)
        yield api
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def throwaway_mlflow_store() -> Iterator[str]:
    """Points MLFLOW_TRACKING_URI at a SQLite store in a temporary folder (removed afterwards), so a timed stage_run
    logs like the pipeline does without touching the user's runs; yields the URI."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory() as store:
        os.environ["MLFLOW_TRACKING_URI"] = uri = f"sqlite:///{store}/mlflow.db"
        try:
            yield uri
        finally:
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous


def set_nested(data: dict, dotted: str, value: Any) -> None:
    """data["a"]["b"] = value for dotted "a.b", creating missing levels (the params schema rejects unknown keys)."""
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


PROJECT_FILES = ("dvc.yaml", "params.yaml", "sources.lock.yaml")
PROJECT_FOLDERS = ("stages", "pipelines")


def copy_project(root: Path) -> None:
    """The files a pipeline run needs (code, stage graph, params, the sources' trust record) into `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, root / name)
    for folder in PROJECT_FOLDERS:
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))


class ProjectCopy:
    """A throwaway copy of the project (own DVC, MLflow and Prefect state) for timing real `dvc repro` runs."""

    def __init__(self, params: dict | None = None, existing: str | None = None):
        """A fresh copy, or (`existing`) one an earlier benchmark kept, reused with this checkout's pipelines/."""
        self.root = Path(existing).resolve() if existing else Path(tempfile.mkdtemp(prefix="lesson5-bench-"))
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "MLFLOW_TRACKING_URI": f"sqlite:///{self.root / 'mlflow.db'}",
                    "PREFECT_HOME": str(self.root / ".prefect"), "DVC_NO_ANALYTICS": "1",
                    "DVC_SITE_CACHE_DIR": str(self.root / ".dvc-site-cache"), "PYTHONPATH": str(self.root)}
        if existing:  # keep its stages (a changed stage script would make it stale); take this flow code
            shutil.rmtree(self.root / "pipelines")
            shutil.copytree(REPO / "pipelines", self.root / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
            return
        copy_project(self.root)
        if params:
            self.set_params(params)
        self.run("git", "init", "-q")
        self.run(str(Path(sys.executable).parent / "dvc"), "init", "-q")

    def run(self, *args: str, quiet: bool = True) -> float:
        """Run a command in the copy; return its wall time in seconds."""
        started = time.perf_counter()
        subprocess.run(list(args), cwd=self.root, env=self.env, check=True,
                       stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.DEVNULL if quiet else None)
        return time.perf_counter() - started

    def dvc(self, *args: str, quiet: bool = True) -> float:
        return self.run(str(Path(sys.executable).parent / "dvc"), *args, quiet=quiet)

    def flow(self, *targets: str, quiet: bool = True) -> float:
        return self.run(sys.executable, "-m", "pipelines.flow", *targets, quiet=quiet)

    def set_params(self, updates: dict) -> None:
        """Set params.yaml values by dotted key, e.g. {"dogscats.train.seed": 43}."""
        path = self.root / "params.yaml"
        data = yaml.safe_load(path.read_text())
        for dotted, value in updates.items():
            set_nested(data, dotted, value)
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def cleanup(self, keep: bool = False) -> None:
        """Remove the copy, or (`keep`) leave it and say where it is."""
        if keep:
            print(f"project copy kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
