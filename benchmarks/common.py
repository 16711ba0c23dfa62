"""Helpers for the benchmarks: they run on the real data (LESSON5_MIRROR), print figures and record each one in
benchmarks/results/<workload>.json (`record_result`); nothing is asserted."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness.project import copy_project, set_nested
from stages.common.cpu import NOTED_FLAGS, cpu_flags, cpu_model
from stages.common.io import atomic_path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"

# A results record (benchmarks/results/<workload>.json holds a JSON list of them, sorted by figure):
RECORD_FIELDS = {
    "figure": "stable id, '<workload>.<...>', e.g. movielens.bias.val_mse",
    "workload": "the file it lives in: movielens, imdb, dogscats, text or orchestration",
    "description": "what was measured, in words",
    "value": "the figure: the mean over `seeds` when there are several",
    "spread": "sample standard deviation over the seeds, or null",
    "seeds": "the seeds measured, or null",
    "per_seed": "the value of each seed (same order), or null",
    "unit": "e.g. MSE, %, s, nats/char (empty: a plain number)",
    "fastai": "fast.ai 2017's figure or the goal (a number or text), or null",
    "command": "the one command that regenerates it (null only for scratch code that was not kept)",
    "commit": "`git rev-parse HEAD` when measured; '-dirty' appended when tracked files differed from it",
    "date": "UTC, ISO 8601",
    "machine": "cores, loadavg [1, 5, 15 min] at the end of the measurement (or null), cpu model (or null); "
    "loadavg_note where only words are known; cpu_flags: which of stages.common.cpu.NOTED_FLAGS the CPU has "
    "(records from 2026-12-08 on: the model name alone does not tell an AMX Xeon from one without bfloat16)",
    "note": "free text: provenance, per-run details, or null",
}
MACHINE_FIELDS = {"cores", "loadavg", "cpu"}
MACHINE_OPTIONAL = {"loadavg_note", "cpu_flags"}


def require_mirror() -> str:
    mirror = os.environ.get("LESSON5_MIRROR")
    if not mirror:
        default = REPO.parent / "shared" / "data"
        if not default.is_dir():
            sys.exit(
                "benchmarks need the real data: set LESSON5_MIRROR to the mirror folder (e.g. ../shared/data), "
                "or run them where the dataset home sites are reachable with LESSON5_MIRROR= (empty)"
            )
        mirror = str(default)
    mirror = os.path.abspath(mirror)  # the benchmarks run stages in throwaway copies elsewhere
    os.environ["LESSON5_MIRROR"] = mirror
    return mirror


def mean_spread(values: list[float]) -> str:
    """'mean ± sample std (min-max, n)'."""
    if len(values) == 1:
        return f"{values[0]:.4f} (n=1)"
    return (
        f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} "
        f"(min {min(values):.4f}, max {max(values):.4f}, n={len(values)})"
    )


def mean_and_spread(values: list[float], digits: int | None) -> tuple[float, float | None]:
    """(mean, sample std) rounded to `digits` (None: whole numbers), the std None for a single value: a record's
    value and spread."""
    return round(statistics.mean(values), digits), (
        round(statistics.stdev(values), digits) if len(values) > 1 else None
    )


class LoadSampler:
    """The 1-minute load average before a long run and every 30 s during it (a benchmark's own work included):
    `with LoadSampler() as load: ...`, then `load.describe()` for a record's note."""

    def __init__(self, every_s: float = 30):
        self.every_s, self.before, self.samples = every_s, os.getloadavg()[0], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def describe(self) -> str:
        mean = sum(self.samples) / max(len(self.samples), 1)
        return (
            f"load average before {self.before:.2f}, during (1-min, every {self.every_s:g} s) mean {mean:.2f}, "
            f"max {max(self.samples or [0]):.2f}"
        )


def user_env(mirror: str) -> dict[str, str]:
    """This shell's environment as a user's for a fresh clone's `make`: no venv on PATH, no Prefect or MLflow
    settings, the mirror."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["LESSON5_MIRROR"] = mirror
    return env


def benchmark_command(module: str, argv: list[str] | None) -> str:
    """The command line that ran this benchmark (`argv` None: this process's own arguments)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def git_commit() -> str:
    """HEAD, with '-dirty' when tracked files differ from it (measured data does not count: the results files, and
    the test durations benchmarks/test_suite.py refreshes)."""
    measured = (":(exclude)benchmarks/results", ":(exclude)tests/durations.json")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *measured)
    return _git("rev-parse", "HEAD") + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """Cores, load average now (the end of a measurement), the CPU model and its noted flags (None: unknown)."""
    flags = cpu_flags()
    return {
        "cores": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu_model() or platform.processor() or None,
        "cpu_flags": None if flags is None else [f for f in NOTED_FLAGS if f in flags],
    }


def check_record(record: dict) -> list[str]:
    """What is wrong with a results record (empty: nothing)."""
    missing, unknown = set(RECORD_FIELDS) - set(record), set(record) - set(RECORD_FIELDS)
    problems = ([f"missing {sorted(missing)}"] if missing else []) + (
        [f"unknown keys {sorted(unknown)}"] if unknown else []
    )
    if missing:
        return problems

    def number(x) -> bool:  # JSON has no NaN or infinity
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    def numbers(x) -> bool:
        return x is None or (isinstance(x, list) and bool(x) and all(number(v) for v in x))

    if not (isinstance(record["figure"], str) and record["figure"].startswith(f"{record['workload']}.")):
        problems.append("figure must be a string starting with '<workload>.'")
    for key in ("workload", "description", "unit", "date"):
        if not isinstance(record[key], str):
            problems.append(f"{key} must be a string")
    if not number(record["value"]):
        problems.append("value must be a number")
    if not (record["spread"] is None or number(record["spread"])):
        problems.append("spread must be a number or null")
    if not (numbers(record["seeds"]) and numbers(record["per_seed"])):
        problems.append("seeds and per_seed must be non-empty lists of numbers, or null")
    elif record["per_seed"] is not None and len(record["per_seed"]) != len(record["seeds"] or []):
        problems.append("per_seed needs seeds, one value each")
    if not (record["fastai"] is None or number(record["fastai"]) or isinstance(record["fastai"], str)):
        problems.append("fastai must be a number, text or null")
    if not (
        isinstance(record["command"], str)
        and record["command"]
        or record["command"] is None
        and "scratch" in (record["note"] or "")
    ):
        problems.append("command must be a command line (null only for scratch code, said in the note)")
    if not isinstance(record["commit"], str):
        problems.append("commit must be a string")
    try:
        if datetime.datetime.fromisoformat(record["date"]).utcoffset() is None:
            problems.append("date needs a UTC offset")
    except (TypeError, ValueError):
        problems.append("date must be ISO 8601")
    m = record["machine"]
    if not (isinstance(m, dict) and MACHINE_FIELDS <= set(m) <= MACHINE_FIELDS | MACHINE_OPTIONAL):
        problems.append(f"machine must have {sorted(MACHINE_FIELDS)} (and optionally {sorted(MACHINE_OPTIONAL)})")
    elif not (numbers(m["loadavg"]) and (m["loadavg"] is None or len(m["loadavg"]) == 3)):
        problems.append("machine.loadavg must be [1, 5, 15 min] or null")
    elif m["loadavg"] is None and not m.get("loadavg_note"):
        problems.append("machine needs loadavg or loadavg_note")
    if not (record["note"] is None or isinstance(record["note"], str)):
        problems.append("note must be text or null")
    return problems


def read_results(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


def results_bytes(records: list[dict]) -> str:
    """The file's one spelling: sorted by figure, keys sorted, 2-space indent, a final newline."""
    return json.dumps(sorted(records, key=lambda r: r["figure"]), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def record_result(
    workload: str,
    figure: str,
    value: float,
    *,
    description: str,
    unit: str,
    command: str | None,
    spread: float | None = None,
    seeds: list | None = None,
    per_seed: list | None = None,
    fastai: float | str | None = None,
    note: str | None = None,
    results_dir: Path = RESULTS_DIR,
) -> dict:
    """Record one measured figure in <results_dir>/<workload>.json, replacing that figure's previous record;
    fills in the commit, the date and the machine. Returns the record."""
    record = {
        "figure": figure,
        "workload": workload,
        "description": description,
        "value": value,
        "spread": spread,
        "seeds": seeds,
        "per_seed": per_seed,
        "unit": unit,
        "fastai": fastai,
        "command": command,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "note": note,
    }
    problems = check_record(record)
    if problems:
        raise ValueError(f"results record {figure}: {'; '.join(problems)}")
    path = Path(results_dir) / f"{workload}.json"
    records = [r for r in read_results(path) if r["figure"] != figure] + [record]
    with atomic_path(path) as tmp:
        tmp.write_text(results_bytes(records), encoding="utf-8")
    return record


def drop_results(workload: str, prefix: str, results_dir: Path = RESULTS_DIR) -> None:
    """Remove the records whose figure starts with `prefix`: a benchmark whose figures replace a whole set (one per
    stage, say) drops the old set first, so a figure no longer measured does not linger."""
    path = Path(results_dir) / f"{workload}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(results_bytes([r for r in read_results(path) if not r["figure"].startswith(prefix)]))


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


class ProjectCopy:
    """A throwaway copy of the project (own DVC, MLflow and Prefect state) for timing real `dvc repro` runs."""

    def __init__(self, params: dict | None = None, existing: str | None = None):
        """A fresh copy, or (`existing`) one an earlier benchmark kept, reused with this checkout's pipelines/."""
        self.root = Path(existing).resolve() if existing else Path(tempfile.mkdtemp(prefix="lesson5-bench-"))
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{self.root / 'mlflow.db'}",
            "PREFECT_HOME": str(self.root / ".prefect"),
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": str(self.root / ".dvc-site-cache"),
            "PYTHONPATH": str(self.root),
        }
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
        subprocess.run(
            list(args),
            cwd=self.root,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.DEVNULL if quiet else None,
        )
        return time.perf_counter() - started

    def dvc(self, *args: str, quiet: bool = True) -> float:
        return self.run(str(Path(sys.executable).parent / "dvc"), *args, quiet=quiet)

    def flow(self, *targets: str, quiet: bool = True, api: str | None = None) -> float:
        """The flow, with its own ephemeral Prefect server or (`api`) against that server."""
        server = ["env", f"PREFECT_API_URL={api}"] if api else []
        return self.run(*server, sys.executable, "-m", "pipelines.flow", *targets, quiet=quiet)

    def make_run(self, *targets: str) -> float:
        """What `make run` runs (Makefile): the project's Prefect server's URL, then the flow against it."""
        shell = f"PREFECT_API_URL=$({sys.executable} -m pipelines.server url) {sys.executable} -m pipelines.flow"
        return self.run("bash", "-c", " ".join([shell, *targets]))

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
