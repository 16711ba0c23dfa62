"""The real MovieLens chain: `dvc repro` and the Prefect flow, on generated data served from loopback."""
from __future__ import annotations

import json
import re

import mlflow
import pytest
import yaml

from tests.factories.movielens import CHAIN, TARGETS, small_movielens

pytestmark = pytest.mark.slow


def stale_stages(project) -> set[str]:
    status = json.loads(project.dvc("status", "--with-deps", "--json", *TARGETS).stdout or "{}")
    return {name.split(":")[-1] for name in status}


def test_dvc_repro_chain_tracks_in_mlflow_and_reruns_only_what_changed(project, http_server):
    small_movielens(project, http_server)
    project.dvc("repro", *TARGETS)
    metrics = json.loads((project.root / "data/movielens/metrics/bias.json").read_text())
    assert 0 < metrics["val_mse"] < 5 and metrics["val_rmse"] == pytest.approx(metrics["val_mse"] ** 0.5)
    assert (project.root / "data/movielens/analysis/pca.csv").is_file()
    assert (project.root / "data/movielens/analysis/pca_pc1_pc3.png").stat().st_size > 10_000

    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lesson5-movielens")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.data.tags["dvc.stage"]: r for r in runs}
    assert set(CHAIN[2:]) <= set(by_stage)
    train = by_stage["movielens_train@bias"]
    assert len(client.get_metric_history(train.info.run_id, "val_mse")) == 2  # one point per epoch
    assert train.data.params["l2"] == "0.0001" and "git.commit" in train.data.tags
    assert train.data.tags["dvc.input.data/movielens/prepared"] not in ("", "untracked")
    logged = client.search_logged_models([experiment.experiment_id])
    assert any(m.source_run_id == train.info.run_id for m in logged)

    shown = project.dvc("metrics", "show", "--json").stdout
    assert "val_mse" in shown and "baselines.json" in shown
    project.dvc("plots", "show", "-o", "plots-html")
    assert (project.root / "plots-html" / "index.html").is_file()

    # a second run reruns nothing
    out = project.dvc("repro", *TARGETS).stdout
    assert "Running stage" not in out and stale_stages(project) == set()
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)

    # one model's epochs changed: only that model's train/evaluate and the analysis of it rerun
    project.set_params({"movielens.models.dot.epochs": 3})
    assert stale_stages(project) == {"movielens_train@dot"}
    project.set_params({"movielens.models.dot.epochs": 2, "movielens.models.bias.epochs": 3})
    out = project.dvc("repro", *TARGETS).stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {
        "movielens_train@bias", "movielens_evaluate@bias", "movielens_analyze"}


def test_logged_model_loads_back(project, http_server):
    small_movielens(project, http_server)
    project.dvc("repro", "movielens_train@dot")
    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lesson5-movielens")
    (model_info,) = client.search_logged_models([experiment.experiment_id])
    mlflow.set_tracking_uri(project.env["MLFLOW_TRACKING_URI"])
    import stages.movielens.models  # noqa: F401  custom layer registration
    model = mlflow.keras.load_model(f"models:/{model_info.model_id}")
    import numpy as np
    out = model.predict({"user": np.array([0, 1], "int32"), "movie": np.array([0, 1], "int32")}, verbose=0)
    assert out.shape == (2,) and np.all((out >= 0) & (out <= 5.5))

    # `dvc exp run -S` on a committed workspace: only the changed model's stage reruns
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    exp = project.dvc("exp", "run", "-S", "movielens.models.dot.epochs=1", "movielens_train@dot").stdout
    assert set(re.findall(r"Running stage '([^']+)'", exp)) == {"movielens_train@dot"}
    assert json.loads((project.root / "data/movielens/metrics/train_dot.json").read_text())["best_epoch"] == 1


def test_prefect_flow_runs_the_graph_and_matches_dvc_repro(project, http_server, tmp_path_factory):
    small_movielens(project, http_server)
    project.env["PREFECT_HOME"] = str(tmp_path_factory.getbasetemp() / "prefect-home")
    flow = project.run(project.env["PATH"].split(":")[0] + "/python", "-m", "pipelines.flow",
                       *TARGETS)
    log = flow.stdout + flow.stderr
    assert "pipeline finished" in log and "10 ran" in log
    assert stale_stages(project) == set()
    # what the flow recorded is what DVC expects: a plain `dvc repro` finds nothing to do
    assert "Running stage" not in project.dvc("repro", "movielens_analyze", "movielens_evaluate").stdout
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(CHAIN)

    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    (parent,) = client.search_runs([client.get_experiment_by_name("lesson5-pipeline").experiment_id])
    children = client.search_runs([client.get_experiment_by_name("lesson5-movielens").experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 8, log  # every stage but download/prepare tracks a run (the log says why not)
    assert all(c.data.tags.get("prefect.flow_run_id") == parent.data.tags["prefect.flow_run_id"] for c in children)

    again = project.run(project.env["PATH"].split(":")[0] + "/python", "-m", "pipelines.flow", *TARGETS)
    assert "10 skipped" in again.stdout + again.stderr

    # a change reruns only what it affects, as `dvc repro` would, and leaves DVC in agreement
    project.set_params({"movielens.models.dot.epochs": 3})
    changed = project.run(project.env["PATH"].split(":")[0] + "/python", "-m", "pipelines.flow", *TARGETS)
    log = changed.stdout + changed.stderr
    assert "2 ran, 8 skipped" in log
    assert re.search(r"ran +movielens_train@dot", log) and re.search(r"ran +movielens_evaluate@dot", log)
    assert stale_stages(project) == set()
    assert "Running stage" not in project.dvc("repro", *TARGETS).stdout
