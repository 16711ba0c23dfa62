"""One MLflow name per quantity, in a real store: a finished training's latest figures are its saved model's, the
summary's best_/final_ copies are left out, units go into names where models differ in them, and files named after
their model on disk get one artifact name in every run."""

from __future__ import annotations

import mlflow
import pytest

from stages.common.tracking import stage_run

# three epochs; the model keeps the weights of epoch 2 (EarlyStopping's restore_best_weights)
ROWS = [
    {"epoch": 1, "loss": 1.0, "val_loss": 1.2, "mse": 1.0, "val_mse": 1.2, "learning_rate": 0.01},
    {"epoch": 2, "loss": 0.8, "val_loss": 0.9, "mse": 0.8, "val_mse": 0.9, "learning_rate": 0.01},
    {"epoch": 3, "loss": 0.7, "val_loss": 1.0, "mse": 0.7, "val_mse": 1.0, "learning_rate": 0.001},
]


@pytest.fixture
def client(tmp_path, monkeypatch, mlflow_store):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.chdir(tmp_path)
    return mlflow.MlflowClient(mlflow_store)


def train_run(names=None):
    with stage_run("movielens", "movielens_train@bias") as run:
        run.rename_metrics(names or {})
        for row in ROWS:  # what the Keras callback logs, epoch by epoch
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        run.log_training(ROWS, {"best_epoch": 2, "best_val_mse": 0.9, "final_val_loss": 1.0, "seconds": 3.0}, 2)
    assert run.active
    return run.run_id


def test_the_latest_value_of_each_curve_is_the_saved_models_and_copies_are_left_out(client):
    metrics = client.get_run(train_run()).data.metrics
    assert metrics["val_mse"] == 0.9 and metrics["val_loss"] == 0.9 and metrics["mse"] == 0.8  # epoch 2's
    assert metrics["learning_rate"] == 0.001  # not a figure of the model: its curve ends at the last epoch
    assert metrics["best_epoch"] == 2 and metrics["seconds"] == 3.0 and metrics["epochs"] == 3
    assert "best_val_mse" not in metrics and "final_val_loss" not in metrics
    history = client.get_metric_history(client.search_runs(["1"])[0].info.run_id, "val_mse")
    assert [(m.step, m.value) for m in history] == [(1, 1.2), (2, 0.9), (3, 1.0), (4, 0.9)]


def test_renamed_metrics_carry_their_unit_and_dropped_ones_are_not_logged(client):
    names = {"loss": "loss_per_char", "val_loss": "val_loss_per_char", "seconds": "train_seconds", "mse": None}
    run_id = train_run(names)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["val_loss_per_char"] == 0.9 and metrics["train_seconds"] == 3.0
    assert not {"loss", "val_loss", "seconds", "mse"} & set(metrics)

    with stage_run("movielens", "movielens_evaluate@bias") as evaluate:  # evaluate's figures land under the same names
        evaluate.rename_metrics(names)
        evaluate.log_metrics({"val_loss": 0.91, "perplexity": 2.5})
    assert client.get_run(evaluate.run_id).data.metrics == {"val_loss_per_char": 0.91, "perplexity": 2.5}


def test_files_named_after_their_model_get_one_artifact_name(client, tmp_path):
    runs = {}
    for name in ("dot", "bias"):
        curves = tmp_path / f"{name}_curves.png"
        curves.write_bytes(name.encode())
        with stage_run("movielens", f"movielens_train@{name}") as run:
            run.log_artifact_as(curves, "plots/curves.png")
        runs[name] = run.run_id
    for name, run_id in runs.items():
        assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/curves.png"]
        fetched = client.download_artifacts(run_id, "plots/curves.png", str(tmp_path / name))
        assert open(fetched, "rb").read() == name.encode()
