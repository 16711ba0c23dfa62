"""The real text chain with `dvc repro`, on a generated corpus (with a broken UTF-8 character) served from loopback."""

from __future__ import annotations

import json

import mlflow
import pytest

from tests.conftest import backed_up_epochs, kill_when_backed_up, stage_runs_by_status
from tests.test_text import generated_text

pytestmark = pytest.mark.slow
TINY = {"epochs": 1, "batch_size": 32, "lr_schedule": [[0, 0.01]], "seed": 0}
MODELS = {
    # cut short by its (opt-in) wall-clock cap at its first batch
    "three_char": {"kind": "three_char", "seq_len": 3, "embedding": 4, "hidden": 8, "max_minutes": 1e-6, **TINY},
    "char_lstm": {
        "kind": "char_lstm",
        "seq_len": 16,
        "embedding": 4,
        "units": [8, 8],
        "dropout": 0.1,
        "max_minutes": 5,
        **TINY,
    },
}


def serve(project, http_server, data: bytes, name: str = "nietzsche.txt") -> None:
    url, sha = http_server.add(name, data)
    project.set_params(
        {"text.source": {"url": url, "sha256": sha}, "text.models": MODELS, "text.evaluate.sample_length": 20}
    )


def test_dvc_repro_text_chain_resumes_a_killed_char_lstm_and_tracks_samples_in_mlflow(project, http_server):
    """The chain on a corpus with a broken UTF-8 character; its character LSTM (time-capped) killed mid-way first:
    the chain's run resumes it after its last finished epoch with the epochs, batches and training seconds of before
    the kill counted (its cap counts them too)."""
    serve(project, http_server, generated_text(3000).encode() + b" werthsch\xe3\xa4tzung \xff end")
    stage = "text_train@char_lstm"
    models = {**MODELS, "char_lstm": {**MODELS["char_lstm"], "epochs": 6, "batch_size": 64}}
    project.set_params({"text.models": models})
    kill_when_backed_up(project, stage, lambda backup: backed_up_epochs(backup) > 0)
    done = backed_up_epochs(project.root / ".cache/backup" / stage)
    timer_state = next((project.root / ".cache/backup" / stage).glob("*/timer.json"))
    seconds_before_kill = json.loads(timer_state.read_text())

    result = project.dvc("repro", "text_evaluate")
    assert f"{stage}: resuming after epoch" in result.stdout, result.stdout[-3000:]
    resumed_at = int(result.stdout.split("resuming after epoch ")[1].split()[0])
    assert done <= resumed_at < 6
    assert f"Epoch {resumed_at + 1}/6" in result.stdout and "Epoch 1/6" not in result.stdout
    root = project.root
    assert len((root / "data/text/history/char_lstm.csv").read_text().splitlines()) == 1 + 6
    stats = json.loads((root / "data/text/prepared/stats.json").read_text())
    assert stats["repaired_chars"] == 1 and stats["replaced_bytes"] == 1
    train, timings = {}, {}
    for name in models:
        metrics = json.loads((root / f"data/text/metrics/{name}.json").read_text())
        assert 0 < metrics["val_loss"] < 5 and metrics["probes_answered"] == 5
        samples = sorted(p.name for p in (root / f"data/text/samples/{name}").iterdir())
        assert samples == ["probes.json", "temperature_0.2.txt", "temperature_0.5.txt", "temperature_1.0.txt"]
        train[name] = json.loads((root / f"data/text/metrics/train_{name}.json").read_text())
        timings[name] = json.loads((root / f"data/text/timings/train_{name}.json").read_text())
        assert timings[name]["train_chars_per_s"] > 0 and "train_chars_per_s" not in train[name]
        assert train[name]["epochs_run"] == models[name]["epochs"]
        assert train[name]["cut_short"] == (name == "three_char")
    # the batches and seconds before the kill counted
    assert train["char_lstm"]["epochs_trained"] == 6
    assert timings["char_lstm"]["train_seconds"] > seconds_before_kill[str(resumed_at)][0]

    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lesson5-text")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not a GenAI landing page
    assert "Nietzsche" in experiment.tags["mlflow.note.content"]  # the experiment's description
    assert sorted(stage_runs_by_status(project, "text", stage)) == ["FINISHED", "KILLED"]
    finished = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    by_stage = {r.data.tags["dvc.stage"]: r for r in finished}
    assert {"text_train@three_char", "text_train@char_lstm", "text_evaluate@char_lstm"} <= set(by_stage)
    assert "max_minutes=1e-06" in by_stage["text_train@three_char"].data.tags["lesson5.cut_short"]
    assert "lesson5.cut_short" not in by_stage["text_train@char_lstm"].data.tags
    # one name per quantity, units in it (nats per character), the same artifact names on every model's rows
    evaluated, trained = by_stage["text_evaluate@char_lstm"], by_stage["text_train@char_lstm"]
    assert "val_loss_per_char" in evaluated.data.metrics and "val_loss" not in evaluated.data.metrics
    names = [set(by_stage[f"text_train@{m}"].data.metrics) for m in models]
    assert names[0] == names[1] >= {"loss_per_char", "val_loss_per_char", "bits_per_char", "epochs"}
    assert not {"val_loss", "epochs_run", "epochs_trained", "final_val_loss"} & names[0]
    for run in (evaluated, trained):
        assert "samples/temperature_0.5.txt" in {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "plots/curves.png" in {a.path for a in client.list_artifacts(trained.info.run_id, "plots")}
    (dataset,) = client.get_run(trained.info.run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "nietzsche-train-chars"

    out = project.dvc("repro", "text_evaluate").stdout
    assert "Running stage" not in out

    # the resumed LSTM ends where an uninterrupted run of it ends
    project.dvc("repro", "--force", "--single-item", stage)
    uninterrupted = json.loads((root / "data/text/metrics/train_char_lstm.json").read_text())
    assert train["char_lstm"]["final_val_loss"] == pytest.approx(uninterrupted["final_val_loss"], abs=0.05)

    # an empty corpus stops text_prepare with one clear line, not a traceback
    serve(project, http_server, b"", name="empty.txt")
    failed = project.dvc("repro", "text_prepare", check=False)
    assert failed.returncode != 0
    assert "data/text/raw/corpus.txt is empty" in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr + failed.stdout
