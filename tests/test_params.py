"""params.yaml validation in the common layer: unreadable files, missing sections, unknown keys, wrong types
and out-of-range values all stop a stage, before any work, with the key, the value and what is allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from stages.common.params import ParamsError, Source, load_params, read_params_file, validate_section
from stages.movielens.params import MovieLensParams
from tests.conftest import REPO


def repo_movielens() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())["movielens"]


@pytest.mark.parametrize(
    "text, match",
    [
        (None, "not found; run stages from the project root"),
        ("movielens: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping of sections at the top level, got list"),
        ("", "expected a mapping of sections at the top level, got NoneType"),
    ],
)
def test_unreadable_params_file(tmp_path, text, match):
    path = tmp_path / "params.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ParamsError, match=match):
        read_params_file(path)


def test_missing_section_lists_the_sections_present(tmp_path):
    (tmp_path / "params.yaml").write_text("imdb: {}\nglove: {}\n")
    with pytest.raises(ParamsError, match="section 'movielens' is missing \\(sections present: imdb, glove\\)"):
        load_params("movielens", MovieLensParams, tmp_path / "params.yaml")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("prepare.seeds", 1, "movielens.prepare.seeds = 1: unknown key; allowed keys here: seed, valid_fraction"),
        ("prepare.valid_fraction", "lots", "movielens.prepare.valid_fraction = 'lots': Input should be a valid number"),
        ("prepare.valid_fraction", 1.5, "movielens.prepare.valid_fraction = 1.5: Input should be less than 1"),
        ("models.bias.epochs", 0, "movielens.models.bias.epochs = 0: Input should be greater than or equal to 1"),
        ("models.bias.kind", "svd", "movielens.models.bias.kind = 'svd': Input should be 'dot', 'bias' or 'nn'"),
        (
            "sources.ml-latest-small.sha256",
            "abc",
            "movielens.sources.ml-latest-small.sha256 = 'abc': Value error, must be 64 hex digits (a sha256) or null",
        ),
        (
            "sources.ml-latest-small.mirror",
            "x",
            "movielens.sources.ml-latest-small.mirror = 'x': unknown key; allowed keys here: md5, sha256, url",
        ),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(key, value, expected):
    section = repo_movielens()
    node = section
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ParamsError) as err:
        validate_section("movielens", section, MovieLensParams)
    assert expected in str(err.value)
    assert "fix the file, or the -S value you passed to `dvc exp run`" in str(err.value)


def test_missing_required_key_is_named():
    section = repo_movielens()
    del section["prepare"]["seed"]
    with pytest.raises(ParamsError, match="movielens.prepare.seed: required key is missing"):
        validate_section("movielens", section, MovieLensParams)


def test_every_error_is_reported_at_once():
    section = repo_movielens()
    section["prepare"]["seed"] = -1
    section["models"]["bias"]["factors"] = 0
    with pytest.raises(ParamsError) as err:
        validate_section("movielens", section, MovieLensParams)
    assert "movielens.prepare.seed = -1" in str(err.value) and "movielens.models.bias.factors = 0" in str(err.value)


def test_source_schema():
    assert Source(url="https://x.org/a.zip", sha256="A" * 64).sha256 == "a" * 64  # normalised to lower case
    assert Source(url="https://x.org/d/a.zip?x=1").filename == "a.zip"
    with pytest.raises(ParamsError, match="src.url = '': String should have at least 1 character"):
        validate_section("src", {"url": ""}, Source)


def test_bad_params_stop_a_real_stage_before_any_work(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text().replace("valid_fraction: 0.2", "valid_fraction: 1.5")
    (tmp_path / "params.yaml").write_text(text)
    (tmp_path / "data" / "movielens" / "raw").mkdir(parents=True)  # raw data is not even needed to fail
    result = subprocess.run(
        [sys.executable, "-m", "stages.movielens.prepare"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert result.returncode == 1
    assert "error: params.yaml: invalid params" in result.stderr
    assert "movielens.prepare.valid_fraction = 1.5: Input should be less than 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "data" / "movielens").iterdir()) == ["raw"]  # nothing written


def test_a_model_name_not_under_the_section_names_the_models_there():
    from stages.common.params import pick_model

    assert pick_model({"dot": 1, "bias": 2}, "bias", "movielens.models") == 2
    with pytest.raises(
        ParamsError, match=r"no model 'nope' under movielens.models in params.yaml \(models: dot, bias\)"
    ):
        pick_model({"dot": 1, "bias": 2}, "nope", "movielens.models")


@pytest.mark.parametrize(
    "override", ["movielens.models.bias.l2=0.0003", "imdb.tokenize.style=keras", "dogscats.prepare.max_per_class=null"]
)
def test_dvcs_rewrite_of_one_value_changes_one_line_of_params_yaml(tmp_path, override):
    """`dvc exp run -S key=value` leaves its rewrite in params.yaml: kept in the form DVC writes, the diff is the
    changed value alone (flow-style lists would each become block style)."""
    import difflib

    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", copy)
    apply_overrides(str(copy), [override])
    before = (REPO / "params.yaml").read_text().splitlines()
    diff = list(difflib.unified_diff(before, copy.read_text().splitlines(), lineterm="", n=0))[2:]  # no file names
    removed, added = [d for d in diff if d.startswith("-")], [d for d in diff if d.startswith("+")]
    assert len(removed) == len(added) == 1, "\n".join(diff[:40])
    assert removed[0][1:].split(":")[0] == added[0][1:].split(":")[0]  # the same key, another value
