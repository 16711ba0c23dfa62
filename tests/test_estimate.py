"""The run-time estimate (pipelines/estimate.py), the calibration it scales by (pipelines/calibrate.py), and the
flow's slots that hand a freed slot to the longest remaining path."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from pipelines import estimate
from pipelines.flow import Progress, Slots
from stages.dogscats.workload import photos_per_class
from stages.text.workload import CORPUS_CHARS
from tests.conftest import REPO
from tests.factories.toy import CHAIN, toy_project

DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())
# two slots: a 2-stage chain (10 s each) beside three independent 6-s stages
GRAPH = {"long1": (), "long2": ("long1",), "short1": (), "short2": (), "short3": ()}
SECONDS = {"long1": 10.0, "long2": 10.0, "short1": 6.0, "short2": 6.0, "short3": 6.0}


def test_the_longest_remaining_path_goes_first():
    assert estimate.remaining_path(GRAPH, SECONDS) == {**SECONDS, "long1": 20.0}
    # long1 and short1 at 0; short2 at 6; long2 at 10 (first in line); short3 at 12: all done at 20. Shortest first
    # would end at 26 (long1 starting at 6, long2 at 16).
    assert estimate.simulate(GRAPH, SECONDS, slots=2) == 20.0
    assert estimate.simulate(GRAPH, SECONDS, slots=1) == sum(SECONDS.values())


def test_the_time_left_counts_the_running_stages_and_skips_the_done_ones():
    done, running = frozenset({"long1", "short1"}), {"long2": 4.0}  # long2 has 6 s to go
    assert estimate.simulate(GRAPH, SECONDS, 2, done, running) == 12.0  # short2 and short3 in the other slot


def test_stage_seconds_are_fixed_plus_work_over_the_calibrated_rate(tmp_path):
    params = json.loads(json.dumps(DEFAULT))
    params["dogscats"]["prepare"]["max_per_class"] = 1000
    params["dogscats"]["features"]["flips"] = True
    reference = estimate.Reference(
        fixed_s={"dogscats_features": 20.0}, efficiency={"dogscats_features": 0.5}, rates={"cpu": 100.0}
    )
    rates = {"cpu": 50.0, "vgg": 10.0}  # a machine half as fast on plain Python as the reference's
    seconds = estimate.stage_seconds(["dogscats_features", "new_stage"], params, tmp_path, rates, reference)
    assert seconds["dogscats_features"] == pytest.approx(20 * 2 + 2000 * 2 / (10 * 0.5))  # both classes, flipped
    assert seconds["new_stage"] == pytest.approx(estimate.UNKNOWN_STAGE_S * 2)


def test_the_work_follows_the_params_not_the_archive(tmp_path, monkeypatch):
    params = json.loads(json.dumps(DEFAULT))
    params["dogscats"]["prepare"]["max_per_class"] = None
    monkeypatch.setenv("LESSON5_MIRROR", "/somewhere")
    assert photos_per_class(params, tmp_path) == 4000
    monkeypatch.delenv("LESSON5_MIRROR")
    assert photos_per_class(params, tmp_path) == 12_500  # the release, when nothing is prepared yet
    report = tmp_path / "data/dogscats/prepared/report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"files_per_class": {"Cat": 12_501, "Dog": 12_499}}))  # what the archive holds
    assert photos_per_class(params, tmp_path) == 12_500
    params["dogscats"]["prepare"]["max_per_class"] = 300
    assert photos_per_class(params, tmp_path) == 300
    work = estimate.stage_work("text_train@char_lstm", params, tmp_path)
    chars = CORPUS_CHARS * (1 - params["text"]["prepare"]["valid_fraction"])
    assert work == estimate.Work("lstm", params["text"]["models"]["char_lstm"]["epochs"] * chars)
    assert estimate.stage_work("imdb_nbsvm_train", params, tmp_path) is None  # a fit of fixed cost, no epochs
    assert estimate.kinds_needed(["imdb_train@cnn", "glove_tsne"], params, tmp_path) == ["cpu", "cnn"]
    assert estimate.stage_work("movielens_train@bias", params, tmp_path).kind == "cnn"  # Keras, no kind of its own


def test_a_freed_slot_goes_to_the_highest_priority_waiting():
    slots = Slots(1)
    assert slots.acquire(0.0)
    order, queued = [], threading.Semaphore(0)

    def wait(priority: float) -> None:
        queued.release()
        slots.acquire(priority)
        order.append(priority)
        slots.release()

    threads = [threading.Thread(target=wait, args=(p,)) for p in (1.0, 3.0, 2.0)]
    for thread in threads:
        thread.start()
        queued.acquire()
    while len(slots._waiting) < 3:  # each thread has queued its entry (acquire blocks after pushing it)
        threading.Event().wait(0.01)
    assert not slots.acquire(5.0, blocking=False)  # taken, and others queue before it
    slots.release()
    for thread in threads:
        thread.join(10)
    assert order == [3.0, 2.0, 1.0]


def test_progress_says_what_is_done_and_the_time_left():
    progress = Progress(dict(GRAPH), dict(SECONDS), slots=2)
    assert progress.priority("long1") == 20.0
    progress.start("long1")
    line = progress.finish("long1")
    assert line.startswith("progress: 1 of 5 stages done, about ") and line.endswith(" left (estimate)")
    assert Progress(dict(GRAPH), None, 2).finish("short1") == "progress: 1 of 5 stages done"


def tiny_params() -> dict:
    """The default params with the char LSTM and the IMDB CNN at tiny sizes."""
    params = json.loads(json.dumps(DEFAULT))
    params["text"]["models"]["char_lstm"].update(units=[8], embedding=4, seq_len=10, batch_size=4)
    params["imdb"]["models"]["cnn"].update(filters=4, hidden=4, batch_size=4)
    params["imdb"]["tokenize"].update(vocab_size=50, maxlen=20)
    return params


@pytest.mark.slow
def test_the_calibration_runs_the_projects_models_in_its_own_process(tmp_path):
    params = tiny_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    from pipelines.calibrate import calibrate

    rates = calibrate(["cpu", "lstm", "cnn"], tmp_path / "params.yaml")
    assert set(rates) == {"cpu", "lstm", "cnn"} and all(rate > 0 for rate in rates.values())
    with pytest.raises(RuntimeError, match="calibration failed"):
        calibrate(["lstm"], tmp_path / "missing.yaml")


@pytest.mark.slow
def test_a_dry_run_prints_what_would_run_and_the_estimate_and_runs_nothing(tmp_path):
    root = toy_project(tmp_path / "toy", CHAIN)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.flow", "--dry-run", "--root", str(root)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)},
    )
    assert done.returncode == 0, done.stderr
    assert "4 of 4 stages would run: " in done.stdout
    assert "estimate for this machine (calibrated: Python" in done.stdout and "M steps/s" in done.stdout
    # no reference run here: each stage 30 s, the chain of 3 the longest path, `apart` beside it
    expected = f"{estimate.minutes(3 * estimate.UNKNOWN_STAGE_S)} with 2 stage(s) at a time (4 stages to run)"
    assert expected in done.stdout
    assert not (root / "data").exists() and not (root / "dvc.lock").exists()
