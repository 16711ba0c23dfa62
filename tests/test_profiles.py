"""Profiles (profiles/<name>.yaml): named sets of `dvc exp run -S` overrides, checked before anything runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from pipelines.profile import Profile, estimate, load_profile, profiled_params, readers, stages_to_rerun
from stages.common.cli import StageError
from stages.common.params import ParamsError
from stages.common.tracking import stage_run, tracking_uri
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
    assert {"text_train@char_lstm", "imdb_compare"} <= set(stages)
    assert not any(s.startswith(("movielens", "dogscats")) for s in stages) and "text_train@word_lstm" not in stages
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


def test_the_estimate_is_work_over_the_measured_throughput(tmp_path):
    for path, content in {
        "data/dogscats/timings/features.json": {"steady_images_per_s": 4.0},
        "data/dogscats/prepared/report.json": {"usable": 8000},
        "data/text/timings/train_char_lstm.json": {"train_chars_per_s": 10_000.0},
        "data/text/prepared/stats.json": {"n_train_chars": 500_000},
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(content))
    profile = load_profile("full", REPO)
    profiled = profiled_params(profile, REPO / "params.yaml")
    costs = {c.stage: c for c in estimate(["dogscats_features", "text_train@char_lstm"], DEFAULT, profiled, tmp_path)}
    assert costs["dogscats_features"].seconds == pytest.approx(8000 * 2 / 4.0)  # every photo and its mirror image
    # 2x512 against 2x256 (embedding 24, 57 characters): the multiply-adds per character, 3.9 times as many
    per_char = [4 * u * (n + u) for n, u in ((24, 512), (512, 512))]
    default_per_char = [4 * u * (n + u) for n, u in ((24, 256), (256, 256))]
    ratio = (sum(per_char) + 512 * 57) / (sum(default_per_char) + 256 * 57)
    assert costs["text_train@char_lstm"].seconds == pytest.approx(30 * 500_000 * ratio / 10_000)


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
