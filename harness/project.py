"""A copy of the project to run the pipeline in (tests' projects, benchmarks' throwaway copies), and params edits
by dotted key."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def set_nested(data: dict, dotted: str, value: Any) -> None:
    """data["a"]["b"] = value for dotted "a.b", creating missing levels (the params schema rejects unknown keys)."""
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


# .gitignore: a copy's git leaves out the MLflow store, caches and backups, as the repository's does
PROJECT_FILES = (".gitignore", "dvc.yaml", "params.yaml", "sources.lock.yaml")
PROJECT_FOLDERS = ("stages", "pipelines", "profiles", "benchmarks/results")  # the records: imdb_compare shows them


def copy_project(root: Path) -> None:
    """The files a pipeline run needs (code, stage graph, params, the sources' trust record) into `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, root / name)
    for folder in PROJECT_FOLDERS:
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
