"""Same result, same bytes: a forced rerun of a deterministic stage rewrites its outputs byte for byte, so DVC
reruns nothing downstream; only the timings (data/<workload>/timings/, which nothing depends on) change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import clone_project

pytestmark = pytest.mark.slow
MODEL = "data/movielens/models/bias.keras"
DOWNSTREAM = ["movielens_evaluate@bias", "movielens_analyze"]


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "timings" not in p.parts
    }


def test_forced_rerun_of_training_rewrites_the_same_bytes_and_leaves_downstream_up_to_date(movielens_chain, tmp_path):
    project = clone_project(movielens_chain, tmp_path / "project")
    data = project.root / "data/movielens"
    before = digests(data)
    timings = json.loads((data / "timings/train_bias.json").read_text())
    assert timings["train_ratings_per_s"] > 0 and "train_ratings_per_s" not in json.loads(
        (data / "metrics/train_bias.json").read_text()
    )

    project.dvc("repro", "--force", "--single-item", "movielens_train@bias")  # seconds later: other save times
    after = digests(data)
    assert after[MODEL.removeprefix("data/movielens/")] == before[MODEL.removeprefix("data/movielens/")]
    assert after == before  # the model, its history, metrics and curves: every output but the timings
    assert json.loads(project.dvc("status", "--json", *DOWNSTREAM).stdout or "{}") == {}  # DVC would skip them
