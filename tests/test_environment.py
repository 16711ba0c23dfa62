"""The locked environment: the two TensorFlow builds resolve apart, and the DVC runner refuses a DVC whose
internals it does not know. (`make install` runs `uv sync --locked`, which fails when pyproject.toml and
uv.lock disagree.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.dvc_runner import DvcInternalsError, DvcRunner, check_dvc_internals
from tests.conftest import REPO

UV = Path(sys.executable).parent / "uv"


def locked_requirements(extra: str) -> set[str]:
    out = subprocess.run([str(UV), "export", "--frozen", "--no-hashes", "--no-emit-project", "--extra", extra],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {line.split("==")[0] for line in out.splitlines() if "==" in line}


def test_cpu_and_gpu_builds_resolve_apart_from_the_lock():
    cpu, gpu = locked_requirements("cpu"), locked_requirements("gpu")
    assert "tensorflow-cpu" in cpu and not any(name.startswith("nvidia-") for name in cpu)
    assert "tensorflow-cpu" not in gpu and "tensorflow" in gpu and "nvidia-cudnn-cu12" in gpu
    conflict = subprocess.run([str(UV), "export", "--frozen", "--extra", "cpu", "--extra", "gpu"], cwd=REPO,
                              capture_output=True, text=True)
    assert conflict.returncode != 0 and "conflict" in conflict.stderr.lower()


def test_the_installed_dvc_has_the_internals_the_runner_drives():
    check_dvc_internals()


def test_a_dvc_whose_internals_changed_is_refused_naming_each_missing_one(monkeypatch, tmp_path):
    from dvc.dvcfile import ProjectFile
    from dvc.repo import Repo

    monkeypatch.delattr(Repo, "_reset")
    monkeypatch.setattr(ProjectFile, "dump", lambda self, stage, **kwargs: None)  # no update_pipeline parameter
    with pytest.raises(DvcInternalsError) as err:
        DvcRunner(tmp_path)
    message = str(err.value)
    assert "dvc.repo.Repo._reset" in message and "dvc.dvcfile.ProjectFile.dump(update_pipeline)" in message
    assert "make install" in message and "dvc repro" in message
