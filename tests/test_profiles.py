"""Profiles (profiles/<name>.yaml): named sets of `dvc exp run -S` overrides, checked before anything runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from pipelines.profile import Profile, load_profile, profiled_params, readers, stages_to_rerun
from stages.common.cli import StageError
from stages.common.params import ParamsError
from stages.common.tracking import stage_run
from stages.common.tracking_store import tracking_uri
from tests.conftest import REPO

PROFILES = sorted(path.stem for path in (REPO / "profiles").glob("*.yaml"))
DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())
EXPERIMENT_COPY = Path(".dvc/tmp/exps/tmpab12cd")  # where `dvc exp run --temp` and `dvc queue` copy the workspace


def get(params: dict, dotted: str):
    for part in dotted.split("."):
        params = params[part]
    return params


def test_there_is_a_full_profile():
    assert "full" in PROFILES


@pytest.mark.parametrize("name", PROFILES)
def test_every_override_is_a_valid_change_that_reaches_a_stage(name):
    profile = load_profile(name, REPO)
    profiled = profiled_params(profile, REPO / "params.yaml")  # DVC's -S rewrite, then every section's schema
    for key, value in profile.overrides.items():
        assert get(profiled, key) == value, f"{key}: DVC's rewrite gave {get(profiled, key)!r}"
        assert get(DEFAULT, key) != value, f"{key}: the override changes nothing"
    unread = [key for key, stages in readers(profile, REPO).items() if not stages]
    assert unread == [], f"no stage in dvc.yaml reads {unread}, so DVC would rerun nothing for them"
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == DEFAULT  # untouched


def test_the_full_profile_reruns_the_stages_of_its_overrides_and_their_downstream_only():
    stages = stages_to_rerun(load_profile("full", REPO), REPO)
    assert {"text_train@char_lstm", "imdb_compare", "dogscats_prepare", "dogscats_finetune"} <= set(stages)
    assert not any(s.startswith("movielens") for s in stages)
    assert "glove_tsne" not in stages and "text_train@word_lstm" not in stages
    assert stages.index("imdb_tokenize") < stages.index("imdb_train@multi_cnn") < stages.index("imdb_compare")


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"text.models.char_lstm.epoch": 3}, "does not have: text.models.char_lstm.epoch"),
        ({"text.models.char_lstm.epochs": 0}, "epochs"),
        ({"dogscats.features.flips": False}, "features.flips"),  # train.flips needs the mirrored features
    ],
)
def test_a_bad_override_stops_before_anything_runs_and_says_which(overrides, says):
    with pytest.raises((StageError, ParamsError), match=says):
        profiled_params(Profile("bad", "", overrides), REPO / "params.yaml")


def test_an_unknown_profile_names_the_ones_there_are(tmp_path):
    with pytest.raises(StageError, match="no profile 'fulll'.*full"):
        load_profile("fulll", REPO)


def test_an_experiment_copy_of_the_workspace_tracks_to_the_repositorys_store(monkeypatch, tmp_path):
    """`dvc exp run --temp` and `dvc queue` run stages under <repo>/.dvc/tmp/exps/<copy>/, deleted afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / "repo" / EXPERIMENT_COPY
    assert tracking_uri(copy) == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    assert tracking_uri(tmp_path / "repo") == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    assert tracking_uri(Path("/")) == "sqlite:////mlflow.db"


def test_a_stage_in_an_experiment_copy_keeps_its_artifacts_in_the_repository(monkeypatch, tmp_path):
    """The first stage to track creates its workload's experiment: from the copy, its models and plots go to the
    repository's ./mlruns, not to the copy's, which DVC deletes."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = tmp_path / "repo"
    copy = repo / EXPERIMENT_COPY
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    (copy / "curves.png").write_bytes(b"a plot")
    with stage_run("movielens", "movielens_train@dot") as run:
        run.log_artifact_as(copy / "curves.png", "plots/curves.png")
    experiment = mlflow.MlflowClient(tracking_uri()).get_experiment_by_name("lesson5-movielens")
    assert Path(experiment.artifact_location).is_relative_to(repo / "mlruns")
    assert [p.read_bytes() for p in (repo / "mlruns").rglob("curves.png")] == [b"a plot"]
    assert not (copy / "mlruns").exists()


def test_a_relative_mirror_is_found_from_an_experiment_copy_of_the_workspace(monkeypatch, tmp_path):
    """LESSON5_MIRROR=../shared/data, as the README has it, names the same folder from the copy's stages."""
    from stages.common.download import fetch
    from stages.common.params import Source

    data = b"the mirrored file\n"
    mirror = tmp_path / "shared" / "data"
    mirror.mkdir(parents=True)
    (mirror / "file.txt").write_bytes(data)
    (mirror / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  file.txt\n")
    copy = tmp_path / "repo" / EXPERIMENT_COPY
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("LESSON5_MIRROR", "../shared/data")
    source = Source(url="http://127.0.0.1:9/file.txt", sha256=hashlib.sha256(data).hexdigest())
    assert fetch(source, copy / "got.txt").read_bytes() == data  # the URL is unreachable: only the mirror has it
