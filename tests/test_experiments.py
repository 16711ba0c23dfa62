"""Experiments the DVC way on the real params.yaml: DVC's own `-S` rewrite keeps the file valid for every key,
and a real `dvc exp run -S` / `dvc exp show` works on it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides
from dvc.utils.serialize import load_yaml

from pipelines.profile import hydra_value
from stages.common.params import read_params_file
from tests.conftest import REPO, VENV_BIN
from tests.test_text import generated_text

REAL_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a params mapping; lists are values, as `-S` sets them."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def changed(value):
    """Another value of the same kind, so that the rewrite has something to write."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 or 1.0
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return 1
    return value  # lists: written back as they are (the whole file is re-dumped either way)


def get(params: dict, dotted: str):
    for part in dotted.split("."):
        params = params[part]
    return params


@pytest.mark.parametrize("section", sorted(REAL_PARAMS))
def test_dvc_param_modification_keeps_params_yaml_valid_for_every_key(tmp_path, section):
    """Every leaf of the section changed at once, as `dvc exp run -S k1=v1 -S k2=v2 ...` would: DVC rewrites
    the whole file with ruamel's round-trip dumper, which is where flow-style mappings broke it."""
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    updates = {key: changed(value) for key, value in leaves(REAL_PARAMS[section], f"{section}.")}
    apply_overrides(str(path), [f"{key}={hydra_value(value)}" for key, value in updates.items()])
    expected = load_yaml(str(REPO / "params.yaml"))
    for key, value in updates.items():
        parent, _, leaf = key.rpartition(".")
        get(expected, parent)[leaf] = value
    for reader in (read_params_file, load_yaml):  # what the stages read, what DVC reads
        try:
            reread = reader(str(path))
        except Exception as err:
            raise AssertionError(f"DVC's rewrite left params.yaml unreadable: {err}\n{path.read_text()}") from None
        assert reread == expected
        assert [key for key in updates if get(reread, key) != updates[key]] == []


def text_mirror(tmp_path):
    """A mirror folder holding a generated nietzsche.txt and its SHA256SUMS."""
    corpus = generated_text(3000).encode()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "nietzsche.txt").write_bytes(corpus)
    (mirror / "SHA256SUMS").write_text(f"{hashlib.sha256(corpus).hexdigest()}  nietzsche.txt\n")
    return mirror


@pytest.mark.slow
def test_dvc_exp_run_and_exp_show_on_the_real_params_file(project, tmp_path):
    mirror = text_mirror(tmp_path)
    project.env["LESSON5_MIRROR"] = str(mirror)
    assert (project.root / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")

    project.dvc("exp", "run", "-n", "fewer-words", "-S", "text.prepare.max_words=5", "text_prepare")
    stats = json.loads((project.root / "data/text/prepared/stats.json").read_text())
    assert stats["word_vocab"] == 5
    assert yaml.safe_load((project.root / "params.yaml").read_text())["text"]["prepare"]["max_words"] == 5

    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    names = {run["name"] for exp in experiments for run in exp["revs"]}
    assert "fewer-words" in names
    params = [
        run["data"]["params"]["params.yaml"]["data"]
        for exp in experiments
        for run in exp["revs"]
        if run["name"] == "fewer-words"
    ]
    assert params[0]["text"]["prepare"]["max_words"] == 5


@pytest.mark.slow
def test_a_profile_runs_as_a_dvc_experiment_in_a_copy_and_leaves_the_workspace_as_it_was(project, tmp_path):
    text_mirror(tmp_path)  # ../mirror, which the profile run reaches by a relative path
    profiles = project.root / "profiles"
    (profiles / "tiny.yaml").write_text(
        "description: one epoch of the three-character model\n"
        "overrides:\n  text.models.three_char.epochs: 1\n  text.models.three_char.hidden: 16\n"
    )
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    project.env["LESSON5_MIRROR"] = "../mirror"  # relative, as in the README: the copy runs in another folder
    del project.env["MLFLOW_TRACKING_URI"]  # the default store, <repo>/mlflow.db
    # as `make run PROFILE=...` runs it: the venv not activated, so `python` on PATH is not the project's
    activated = project.env["PATH"]
    project.env["PATH"] = os.pathsep.join(p for p in activated.split(os.pathsep) if p != str(VENV_BIN))
    out = project.run(str(VENV_BIN / "python"), "-m", "pipelines.flow", "--profile", "tiny", "text_train@three_char")
    project.env["PATH"] = activated
    log = out.stdout + out.stderr
    assert "text.models.three_char.epochs = 1" in log and "stages it reruns" in log and "TensorFlow sees" in log
    assert (project.root / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()  # untouched
    assert not (project.root / "data/text/models").exists()  # the workspace's outputs too

    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    runs = [run for rev in shown for exp in (rev.get("experiments") or []) for run in exp["revs"]]
    tiny = [run for run in runs if run["name"].startswith("tiny-")]
    assert len(tiny) == 1
    assert tiny[0]["data"]["params"]["params.yaml"]["data"]["text"]["models"]["three_char"]["hidden"] == 16

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lesson5-text")
    assert experiment is not None, "the experiment copy's runs were lost with the copy"
    runs = client.search_runs([experiment.experiment_id])
    trained = [r for r in runs if r.data.tags["dvc.stage"] == "text_train@three_char"]
    assert len(trained) == 1 and trained[0].data.params["hidden"] == "16"
    # and their artifacts: the experiment was made in the workspace, not in the copy DVC deleted
    assert Path(experiment.artifact_location).is_relative_to(project.root / "mlruns")
    assert "plots" in {a.path for a in client.list_artifacts(trained[0].info.run_id)}

    # `dvc queue`: queued experiments run in copies under .dvc/tmp/exps too, and their runs land in the same store
    project.dvc(
        "exp", "run", "--queue", "--name", "queued", "-S", "text.models.three_char.hidden=12", "text_train@three_char"
    )
    project.dvc("queue", "start")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = project.dvc("queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Success" in status, status + project.dvc("queue", "logs", "queued", check=False).stdout[-3000:]
    project.dvc("queue", "stop", check=False)
    queued = client.search_runs([experiment.experiment_id], "tags.`dvc.exp_name` = 'queued'")
    assert [r.data.params["hidden"] for r in queued if r.data.tags["dvc.stage"] == "text_train@three_char"] == ["12"]
