"""scripts/find-python.sh, the Python `make install` builds the venv with, run for real in a PATH of its own: this
run's own interpreter, and fake ones (shell scripts that fail as a pyenv shim of an unselected version does, or
report a version). The supported versions are pyproject.toml's requires-python."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "find-python.sh"
REQUIRES = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
SUPPORTED = [f"3.{minor}" for minor in range(40) if f"3.{minor}" in REQUIRES]  # ["3.11", "3.12", "3.13"]
NEWEST, OLDEST = SUPPORTED[-1], SUPPORTED[0]
HERE = "{}.{}".format(*sys.version_info[:2])  # this run's Python: real and supported
OTHER = next(v for v in reversed(SUPPORTED) if v != HERE)
SHIM = 'echo "pyenv: ${0##*/}: command not found" >&2; exit 127'  # what an unselected pyenv shim does


def fake(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def real(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(sys.executable)
    return path


def find(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The script with PATH holding only tmp_path/bin (the candidates) and tmp_path/tools (rm and mkdir)."""
    tools = tmp_path / "tools"
    if not tools.exists():
        tools.mkdir()
        for tool in ("rm", "mkdir"):
            (tools / tool).symlink_to(shutil.which(tool))
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{tools}"}
    return subprocess.run(
        [shutil.which("bash"), str(SCRIPT), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def refused(result: subprocess.CompletedProcess) -> str:
    """The one-line refusal, checked for what every refusal names: the supported versions and how to name one."""
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"needs Python {', '.join(SUPPORTED[:-1])} or {NEWEST}:" in result.stderr
    assert f"pyenv install {NEWEST}" in result.stderr
    assert f"make install PYTHON=/path/to/python{NEWEST}" in result.stderr
    return result.stderr


def test_the_newest_supported_python_that_runs_is_chosen(tmp_path):
    bin = tmp_path / "bin"
    fake(bin / f"python{NEWEST}", SHIM)
    fake(bin / f"python{SUPPORTED[-2]}", "echo 3.10")  # misnamed: reports an unsupported version
    fake(bin / f"python{OLDEST}", "exit 1")
    real(bin / "python3")
    assert find(tmp_path).stdout == f"{bin / 'python3'}\n"
    fake(bin / f"python{SUPPORTED[-2]}", f"echo {SUPPORTED[-2]}")
    assert find(tmp_path).stdout == f"{bin / f'python{SUPPORTED[-2]}'}\n"  # newer than python3's
    fake(bin / f"python{NEWEST}", f"echo {NEWEST}")
    assert find(tmp_path).stdout == f"{bin / f'python{NEWEST}'}\n"


def test_no_supported_python_on_path_is_refused_naming_the_candidates(tmp_path):
    fake(tmp_path / "bin" / f"python{NEWEST}", SHIM)
    fake(tmp_path / "bin" / "python3", "echo 3.10")
    message = refused(find(tmp_path))
    assert f"none of python{NEWEST} " in message and " python3 on PATH runs a supported version" in message


def test_python_names_the_interpreter_or_is_refused(tmp_path):
    bin = tmp_path / "bin"
    fake(bin / f"python{NEWEST}", f"echo {NEWEST}")  # discovery would take it
    mine = real(tmp_path / "elsewhere" / "python")
    assert find(tmp_path, str(mine)).stdout == f"{mine}\n"
    old = fake(tmp_path / "elsewhere" / "python3.10", "echo 3.10")
    assert f"error: PYTHON={old} is Python 3.10;" in refused(find(tmp_path, str(old)))
    shim = fake(bin / "python3.99", SHIM)
    assert "error: PYTHON=python3.99 does not run;" in refused(find(tmp_path, "python3.99"))
    assert f"error: PYTHON={shim}x: no such command;" in refused(find(tmp_path, f"{shim}x"))


def test_a_venv_of_a_supported_version_stays_when_no_python_is_named(tmp_path):
    venv = tmp_path / "venv"
    fake(venv / "bin" / "python", f"echo {OTHER}")
    (venv / "kept").touch()
    result = find(tmp_path, "--venv", str(venv))
    assert result.returncode == 0 and result.stderr == ""
    assert (venv / "kept").exists() and (venv / ".python").read_text() == f"{OTHER}\n"
    old = fake(tmp_path / "python3.10", "echo 3.10")
    refused(find(tmp_path, "--venv", str(venv), str(old)))  # an unsupported PYTHON= leaves the venv as it was
    assert (venv / "kept").exists()


def test_a_venv_of_an_unsupported_python_is_rebuilt_with_the_one_found_and_a_folder_of_another_kind_kept(tmp_path):
    venv = tmp_path / "venv"
    fake(venv / "bin" / "python", "echo 3.10")
    (venv / "stale").touch()
    # an interpreter that reports OTHER and makes a venv's folder when asked to (mkdir is in tools)
    fake(tmp_path / "bin" / "python3", f'[ "$1" = -I ] && echo {OTHER} || mkdir -p "$3/bin"')
    assert find(tmp_path, "--venv", str(venv)).stderr == (
        f"error: {venv} is not a venv (no pyvenv.cfg), so it is not replaced: move it, or name another VENV=\n"
    )
    assert (venv / "stale").exists()
    (venv / "pyvenv.cfg").touch()
    result = find(tmp_path, "--venv", str(venv))
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"rebuilding {venv}: its Python is 3.10\n"
    assert not (venv / "stale").exists() and (venv / ".python").read_text() == f"{OTHER}\n"


def test_a_venv_of_another_version_than_python_names_is_rebuilt_with_it(tmp_path):
    venv = tmp_path / "venv"
    fake(venv / "bin" / "python", f"echo {OTHER}")
    (venv / "pyvenv.cfg").touch()
    (venv / "stale").touch()
    named = real(tmp_path / "named" / "python")
    result = find(tmp_path, "--venv", str(venv), str(named))
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"rebuilding {venv}: its Python is {OTHER}, PYTHON={named} is {HERE}\n"
    assert not (venv / "stale").exists() and (venv / ".python").read_text() == f"{HERE}\n"
    rebuilt = subprocess.run([venv / "bin" / "python", "-c", "import sys; print(sys.prefix)"], capture_output=True)
    assert rebuilt.stdout.decode().strip() == str(venv)  # a real venv, of the named Python
