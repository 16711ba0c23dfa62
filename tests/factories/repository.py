"""A git + DVC repository made as `git init` and `dvc init` make it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def init_repository(root: Path, *, git: bool = True) -> None:
    """`git init` (unless `git` is false) and `dvc init` in `root`. DVC's init runs in this process: its command line
    would import DVC again in a new process for each of the suite's many projects."""
    from dvc.repo import Repo

    if git:
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    Repo.init(root, no_scm=not git).close()
