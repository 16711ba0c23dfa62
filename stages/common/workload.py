"""What the pipeline knows of a workload, declared by the workload itself.

Each `stages/<name>/workload.py` holds a `WORKLOAD`: its params section's schema, a description, the metrics its
models are judged by, and for the run-time estimate the work each of its stages does and the kinds of work it can
measure. `registry()` finds them all, so `pipelines/` loops over workloads without naming one (as Kedro's pipeline
registry does). A stage belongs to the workload its dvc.yaml name starts with: `imdb_train@cnn` to `imdb`.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from stages.common.io import read_json
from stages.common.params import Schema


@dataclass(frozen=True)
class Work:
    kind: str  # a calibration kind (`Workload.calibrations` of some workload, or "cpu")
    units: float  # images, characters, reviews or ratings, in all epochs


def no_work(stage: str, params: Mapping, root: Path) -> Work | None:
    return None


@dataclass(frozen=True)
class Calibration:
    """One kind of work measured on this machine: `measure(the workload's params section)` in units per second."""

    label: str  # what the estimate's report calls it, e.g. "VGG16"
    unit: str  # of the rate, e.g. "images/s"
    measure: Callable[[Any], float]
    note: Callable[[Any], str] = lambda p: ""  # what else the report says of it (the VGG16 policy)


@dataclass(frozen=True)
class Workload:
    name: str  # its params.yaml section and the prefix of its stages' names
    description: str
    schema: type[Schema]
    headlines: Mapping[str, bool] = field(default_factory=dict)  # metric: whether higher is better
    # (stage, the whole params.yaml, the repository root) -> the work the stage's params ask for; None: fixed cost
    work: Callable[[str, Mapping, Path], Work | None] = no_work
    # the kinds of work it measures on this machine for a few seconds, by name
    calibrations: Mapping[str, Calibration] = field(default_factory=dict)

    def owns(self, stage: str) -> bool:
        return stage.startswith(f"{self.name}_")


@cache
def registry() -> dict[str, Workload]:
    """Every workload: the `WORKLOAD` of each stages/<package>/workload.py, by name."""
    import stages

    found = {}
    for package in pkgutil.iter_modules(stages.__path__):
        if package.ispkg and importlib.util.find_spec(f"stages.{package.name}.workload"):
            workload = getattr(importlib.import_module(f"stages.{package.name}.workload"), "WORKLOAD", None)
            if workload:  # stages/common/workload.py is this module
                found[workload.name] = workload
    return found


def workload_of(stage: str) -> str:
    """The name of the workload a dvc.yaml stage belongs to; "" for a stage of none."""
    return next((w.name for w in registry().values() if w.owns(stage)), "")


def measured_rate(step: Callable[[], Any], units_per_step: float, seconds: float = 2.0) -> float:
    """Units per second of `step`, timed over at least `seconds` (and at least two steps) after one warm-up."""
    step()
    steps, started = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * units_per_step / (time.perf_counter() - started)


def read_if_there(path: Path) -> dict:
    """What an earlier run's stage wrote there (prepared data's statistics), or {} before it has run."""
    return read_json(path) if path.is_file() else {}
