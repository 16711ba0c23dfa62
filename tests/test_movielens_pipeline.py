"""The real MovieLens chain: `dvc repro` and the Prefect flow, on generated data served from loopback."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import clone_project, served_predictions
from tests.factories.movielens import CHAIN, TARGETS

pytestmark = pytest.mark.slow


def stale_stages(project) -> set[str]:
    status = json.loads(project.dvc("status", "--with-deps", "--json", *TARGETS).stdout or "{}")
    return {name.split(":")[-1] for name in status}


def flow(project, *targets: str) -> str:
    result = project.run(sys.executable, "-m", "pipelines.flow", *targets)
    return result.stdout + result.stderr


def test_the_flow_reproduces_the_chain_as_dvc_repro_would_and_tracks_every_stage(movielens_chain, tmp_path):
    project = movielens_chain  # built by the flow once per session; only read here
    assert "pipeline finished" in project.flow_log and "10 ran" in project.flow_log
    assert stale_stages(project) == set()
    # what the flow recorded is what DVC expects: a plain `dvc repro` finds nothing to do
    assert "Running stage" not in project.dvc("repro", *TARGETS).stdout
    assert set(yaml.safe_load((project.root / "dvc.lock").read_text())["stages"]) >= set(CHAIN)

    metrics = json.loads((project.root / "data/movielens/metrics/bias.json").read_text())
    assert 0 < metrics["val_mse"] < 5 and metrics["val_rmse"] == pytest.approx(metrics["val_mse"] ** 0.5)
    assert (project.root / "data/movielens/analysis/pca.csv").is_file()
    assert (project.root / "data/movielens/analysis/pca_pc1_pc3.png").stat().st_size > 10_000

    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    (flow_run,) = client.search_runs([client.get_experiment_by_name("lesson5-pipeline").experiment_id])
    experiment = client.get_experiment_by_name("lesson5-movielens")
    # the flow's parent in this workload's experiment, every stage run nested under it
    (parent,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'pipeline'")
    assert parent.data.tags["mlflow.parentRunId"] == flow_run.info.run_id and parent.info.status == "FINISHED"
    runs = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_stage = {r.data.tags["dvc.stage"]: r for r in runs}
    assert set(by_stage) == set(CHAIN[2:]), project.flow_log  # every stage but download/prepare tracks a run
    assert all(r.data.tags.get("prefect.flow_run_id") == flow_run.data.tags["prefect.flow_run_id"] for r in runs)
    # its summary: the headline figure of each model and baseline, the best one on the parent
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "summary.json", str(tmp_path))).read_text())
    summary = dict(zip((row[0] for row in table["data"]), (row[1] for row in table["data"]), strict=True))
    assert set(summary) == {f"movielens_train@{m}" for m in ("dot", "bias", "nn")} | {
        "movielens_baselines@global_mean",
        "movielens_baselines@movie_mean",
    }
    assert parent.data.metrics["val_mse"] == pytest.approx(min(summary.values()))
    assert summary[parent.data.tags["lesson5.best.val_mse"]] == min(summary.values())

    # one name per quantity: the models' rows and the baselines' compare column by column
    names = {r.info.run_name: set(r.data.metrics) for r in runs}
    trained = [names[f"movielens_train@{m}"] for m in ("dot", "bias", "nn")]
    assert trained[0] == trained[1] == trained[2] >= {"val_mse", "val_rmse", "best_epoch", "epochs", "n_valid"}
    baselines = [names[f"movielens_baselines@{b}"] for b in ("global_mean", "movie_mean")]
    assert baselines[0] == baselines[1] == {"val_mse", "val_rmse"}
    every = set().union(*names.values())
    assert not [k for k in every if k.startswith(("best_val", "final_")) or any(m in k for m in ("dot", "bias", "nn"))]
    train = by_stage["movielens_train@bias"]
    # one point per epoch, then the saved model's (the best epoch's) again, MLflow's convention for restored weights
    history = client.get_metric_history(train.info.run_id, "val_mse")
    best = json.loads((project.root / "data/movielens/metrics/train_bias.json").read_text())["best_epoch"]
    assert [m.step for m in history] == [1, 2, 3] and history[-1].value == history[best - 1].value
    assert train.data.metrics["val_mse"] == history[best - 1].value
    (dataset,) = client.get_run(train.info.run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "movielens-train"
    assert train.data.params["l2"] == "0.0001" and "git.commit" in train.data.tags
    assert train.data.tags["dvc.input.data/movielens/prepared"] not in ("", "untracked")
    logged = client.search_logged_models([experiment.experiment_id])
    assert any(m.source_run_id == train.info.run_id for m in logged)

    shown = project.dvc("metrics", "show", "--json").stdout
    assert "val_mse" in shown and "baselines.json" in shown


def test_a_param_change_reruns_only_what_it_affects_by_the_flow_and_by_dvc_repro(movielens_chain, tmp_path):
    project = clone_project(movielens_chain, tmp_path / "project")
    project.env["PREFECT_API_URL"] = movielens_chain.env["PREFECT_API_URL"]
    assert "10 skipped" in flow(project, *TARGETS)

    # one model's epochs changed: only that model's train/evaluate rerun (its outputs change, the others' not)
    project.set_params({"movielens.models.dot.epochs": 3})
    assert stale_stages(project) == {"movielens_train@dot"}
    log = flow(project, *TARGETS)
    assert "2 ran, 8 skipped" in log
    assert re.search(r"ran +movielens_train@dot", log) and re.search(r"ran +movielens_evaluate@dot", log)
    assert stale_stages(project) == set()
    assert "Running stage" not in project.dvc("repro", *TARGETS).stdout

    # the same by `dvc repro`: the analysed model changed, so its analysis reruns too
    project.set_params({"movielens.models.bias.epochs": 3})
    out = project.dvc("repro", *TARGETS).stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {
        "movielens_train@bias",
        "movielens_evaluate@bias",
        "movielens_analyze",
    }
    project.dvc("plots", "show", "-o", "plots-html")
    assert (project.root / "plots-html" / "index.html").is_file()


def test_logged_model_loads_back_and_an_experiment_reruns_only_its_model(movielens_chain, tmp_path):
    client = mlflow.MlflowClient(movielens_chain.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lesson5-movielens")
    (dot_run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'movielens_train@dot'")
    (model_info,) = [
        m for m in client.search_logged_models([experiment.experiment_id]) if m.source_run_id == dot_run.info.run_id
    ]
    mlflow.set_tracking_uri(movielens_chain.env["MLFLOW_TRACKING_URI"])
    import numpy as np

    model = mlflow.keras.load_model(f"models:/{model_info.model_id}")  # built-in layers only: no import needed
    out = model.predict({"user": np.array([0, 1], "int32"), "movie": np.array([0, 1], "int32")}, verbose=0)
    assert out.shape == (2,) and np.all((out >= 0) & (out <= 5.5))

    # named after its model, with a signature, and carrying the metrics of the epoch whose weights it holds
    assert model_info.name == "dot"
    info = mlflow.models.get_model_info(f"models:/{model_info.model_id}")
    assert [spec["name"] for spec in info.signature.inputs.to_dict()] == ["user", "movie"]
    local = mlflow.artifacts.download_artifacts(f"models:/{model_info.model_id}")
    example = mlflow.models.Model.load(local).load_input_example(local)
    assert sorted(example) == ["movie", "user"] and model.predict(example, verbose=0).shape == (1,)
    best = json.loads((movielens_chain.root / "data/movielens/metrics/train_dot.json").read_text())["best_epoch"]
    at_best = {m.key: m.value for m in client.get_metric_history(dot_run.info.run_id, "val_loss") if m.step == best}
    linked = {m.key: m.value for m in model_info.metrics}
    assert linked["val_loss"] == at_best["val_loss"] and {m.step for m in model_info.metrics} == {best}

    # the champion: the best evaluated model on validation MSE, answering as `mlflow models serve`
    metrics = movielens_chain.root / "data/movielens/metrics"
    models = [p.stem.removeprefix("train_") for p in metrics.glob("train_*.json")]
    val = {m: json.loads((metrics / f"{m}.json").read_text())["val_mse"] for m in models}
    champion = client.get_model_version_by_alias("lesson5-movielens", "champion")
    assert champion.tags["model"] == min(val, key=val.get) and float(champion.tags["validation.val_mse"]) == min(
        val.values()
    )
    ratings = served_predictions(
        "models:/lesson5-movielens@champion", movielens_chain.env, {"inputs": {"user": [0, 1], "movie": [0, 1]}}
    )
    assert len(ratings) == 2 and all(0 <= r <= 5.5 for r in ratings)

    # `dvc exp run -S` on a committed workspace: only the changed model's stage reruns
    project = clone_project(movielens_chain, tmp_path / "project")
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    exp = project.dvc("exp", "run", "-S", "movielens.models.dot.epochs=1", "movielens_train@dot").stdout
    assert set(re.findall(r"Running stage '([^']+)'", exp)) == {"movielens_train@dot"}
    assert json.loads((project.root / "data/movielens/metrics/train_dot.json").read_text())["best_epoch"] == 1
