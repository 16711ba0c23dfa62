"""The workload registry (stages/common/workload.py): what pipelines/ knows of each workload, declared by it."""

from __future__ import annotations

import yaml

from pipelines.calibrate import calibrations
from stages.common.params import read_params_file, validate_section
from stages.common.workload import registry, workload_of
from tests.conftest import REPO


def test_every_workload_declares_itself_and_owns_its_stages():
    workloads = registry()
    assert sorted(workloads) == ["dogscats", "glove", "imdb", "movielens", "text"]
    params = read_params_file(REPO / "params.yaml")
    for name, workload in workloads.items():
        validate_section(name, params[name], workload.schema)  # its schema is its params.yaml section's
        assert workload.description
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert {name: workload_of(name) for name in stages if not workload_of(name)} == {}
    assert workload_of("first") == ""  # a stage of no workload (the tests' toy projects)


def test_the_work_of_every_stage_is_of_a_kind_some_workload_measures():
    from dvc.repo import Repo

    params = read_params_file(REPO / "params.yaml")
    known = calibrations()
    kinds = {}
    for stage in Repo(str(REPO)).index.stages:
        owner = registry()[workload_of(stage.addressing)]
        if work := owner.work(stage.addressing, params, REPO):
            kinds[stage.addressing] = work.kind
            assert work.units > 0
    assert set(kinds.values()) <= set(known) and "dogscats_features" in kinds and "text_train@char_lstm" in kinds
