"""A champion per workload in a real MLflow store: registered on the first offer, the alias moved only by a model
better on validation, its figures as version tags; a model file never logged cannot be offered."""

from __future__ import annotations

import mlflow
import pytest

from stages.common.champion import ALIAS, registered_name
from stages.common.io import save_keras
from stages.common.tracking import stage_run


@pytest.fixture
def store(tmp_path, monkeypatch, mlflow_store) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.chdir(tmp_path)  # the champion lock lives in .cache/ of the repository root
    return mlflow_store


def trained(tmp_path, name: str, factors: int):
    """A model as a train stage leaves it: its DVC output written, then logged from it."""
    from stages.movielens.models import dot_model

    model = dot_model(5, 6, factors, 1e-4, (0.0, 5.5))
    path = tmp_path / f"{name}.keras"
    save_keras(path, model)
    with stage_run("movielens", f"movielens_train@{name}") as run:
        run.log_metrics({"val_mse": 9.0}, step=1)  # its per-epoch curve
        run.log_keras_model(model, name, 1, path)
    assert run.active
    return path


def offer(path, name: str, val_mse: float):
    with stage_run("movielens", f"movielens_evaluate@{name}") as run:
        run.log_onto_training_run("movielens", path, {"val_mse": val_mse, "val_rmse": val_mse**0.5})
        run.offer_champion("movielens", path, ("val_mse", val_mse), False, {"validation.val_rmse": val_mse**0.5})
    return run


def champion(uri):
    version = mlflow.MlflowClient(uri).get_model_version_by_alias(registered_name("movielens"), ALIAS)
    return version.tags["model"], float(version.tags["validation.val_mse"]), int(version.version)


def test_the_alias_moves_only_to_a_model_better_on_validation(store, tmp_path, capsys):
    dot, bias, nn = trained(tmp_path, "dot", 2), trained(tmp_path, "bias", 3), trained(tmp_path, "nn", 4)
    offer(bias, "bias", 0.80)
    assert champion(store) == ("bias", 0.80, 1)
    offer(dot, "dot", 0.85)  # worse: the champion stays, nothing is registered
    assert champion(store) == ("bias", 0.80, 1)
    offer(nn, "nn", 0.79)
    assert champion(store) == ("nn", 0.79, 2)
    version = mlflow.MlflowClient(store).get_model_version_by_alias(registered_name("movielens"), ALIAS)
    assert float(version.tags["validation.val_rmse"]) == pytest.approx(0.79**0.5)

    loaded = mlflow.pyfunc.load_model(f"models:/{registered_name('movielens')}@{ALIAS}")  # the README's two lines
    assert loaded.metadata.get_model_info().name == "nn"

    # the evaluation's new figures are on the training run too (one row per model); its own val_mse curve stays
    trained_run = mlflow.MlflowClient(store).get_run(version.run_id).data.metrics
    assert trained_run["val_rmse"] == pytest.approx(0.79**0.5) and trained_run["val_mse"] == 9.0


def test_a_model_file_that_was_never_logged_is_refused_with_a_warning(store, tmp_path, capsys):
    trained(tmp_path, "dot", 2)
    stray = tmp_path / "restored.keras"
    stray.write_bytes(b"not the logged file")  # as a train stage restored from DVC's run-cache, which logs nothing
    run = offer(stray, "dot", 0.5)
    assert "was never logged to lesson5-movielens" in capsys.readouterr().err
    assert run.active  # not an outage: the stage's other logging goes on
    with pytest.raises(mlflow.exceptions.MlflowException):
        champion(store)
    assert mlflow.active_run() is None  # every run this process started has ended


def test_a_run_whose_logging_failed_is_still_ended(store, monkeypatch):
    """After a failed logging call the StageRun stops logging, but its MLflow run must not stay this process's
    active run: the next stage_run in the same process (the flow, a test worker) could not start."""
    with stage_run("movielens", "movielens_evaluate@dot") as run:
        run.log_artifact("/nonexistent/file", "plots")
    assert not run.active and mlflow.active_run() is None
    with stage_run("movielens", "movielens_evaluate@bias") as second:
        pass
    assert second.run_id and second.active
