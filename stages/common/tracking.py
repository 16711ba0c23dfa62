"""MLflow tracking shared by every training and evaluation stage.

One experiment per workload (`lesson5-<workload>`), one run per DVC stage, tagged
with the git commit, the DVC stage name and the DVC hashes of its inputs. When
the pipeline flow runs, each stage run is nested under the flow's parent run
(LESSON5_PARENT_RUN_ID). Tracking never costs a stage its outputs: if the
tracking server is unreachable the stage warns, goes on, and its DVC outputs and
metrics are written as usual.

Beside it: the store and the experiments (tracking_store.py), the models a run logs and finds again
(logged_models.py), closing the runs of killed processes (ghost_runs.py); the flow's parent run in each
workload's experiment is pipelines/parent_runs.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from stages.common.ghost_runs import PROCESS_TAG, close_ghost_runs, this_process
from stages.common.logged_models import ModelLogging, named_copy
from stages.common.resume import dvc_hashes
from stages.common.tracking_store import configure_mlflow, ensure_store, experiment_name, experiment_tags, tracking_uri

PARENT_RUN_ENV = "LESSON5_PARENT_RUN_ID"
FLOW_RUN_ENV = "LESSON5_FLOW_RUN_ID"


def git_commit(cwd: str | os.PathLike = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class StageRun(ModelLogging):
    """Logging calls that degrade to warnings when MLflow is unavailable."""

    def __init__(self, active: bool, stage: str = "<stage>"):
        self.active, self.stage = active, stage
        self.run_id: str | None = None
        self._logged: dict[str, Any] = {}  # model file -> its LoggedModel, looked up once per stage run
        self._names: dict[str, str | None] = {}  # a stage's own metric name -> its MLflow name (None: not logged)

    def rename_metrics(self, names: Mapping[str, str | None]) -> None:
        """Log these metrics under other names (None: not at all), e.g. a text model's `val_loss` as
        `val_loss_per_char`: one MLflow name per quantity across a workload's runs, units in it where they differ."""
        self._names.update(names)

    def _named(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        named = {self._names.get(k, k): v for k, v in metrics.items() if isinstance(v, (int, float))}
        return {k: float(v) for k, v in named.items() if k is not None}

    def _safely(self, what: str, fn, *args, **kwargs):
        if not self.active:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # tracking must never lose a stage's work
            self.active = False
            print(
                f"WARNING: MLflow {what} failed ({type(err).__name__}: {err}); the stage goes on, its DVC outputs "
                f"are written; once MLflow is back, re-log it with `dvc repro --force --single-item {self.stage}`.",
                file=sys.stderr,
            )
            return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        self._safely("log_params", mlflow.log_params, {k: str(v)[:500] for k, v in flatten(params).items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        self._safely("log_metrics", mlflow.log_metrics, self._named(metrics), step=step)

    def log_training(self, rows: list[Mapping[str, float]], summary: Mapping[str, Any], model_epoch: int) -> None:
        """A finished training's figures, one name per quantity. The epoch whose weights the model holds
        (`model_epoch`, from 1) is logged again after the last one, MLflow autolog's convention for restored
        weights: each curve's latest value, which the runs table shows, is the saved model's. The summary's
        `best_<x>`/`final_<x>` copies of those figures are left out (duplicates); `epochs` is the number trained
        unless the summary says otherwise."""
        figures = {k: v for k, v in rows[model_epoch - 1].items() if k.startswith("val_") or f"val_{k}" in rows[0]}
        self.log_metrics(figures, step=len(rows) + 1)
        copies = {f"{prefix}_{k}" for k in figures for prefix in ("best", "final")}
        self.log_metrics({"epochs": len(rows), **{k: v for k, v in summary.items() if k not in copies}})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        self._safely("set_tags", mlflow.set_tags, dict(tags))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        import mlflow

        self._safely("log_artifact", mlflow.log_artifact, str(path), artifact_path)

    def log_artifact_as(self, path: str | os.PathLike, artifact_file: str) -> None:
        """`path` under the artifact name `artifact_file` (a model's file is named after it on disk; in MLflow every
        run's copy has the same name, so the compare view lines them up)."""
        import mlflow

        def _log():
            with named_copy(path, artifact_file) as (named, folder):
                mlflow.log_artifact(named, folder)

        self._safely("log_artifact", _log)

    def log_text(self, text: str, artifact_file: str) -> None:
        import mlflow

        self._safely("log_text", mlflow.log_text, text, artifact_file)

    def log_dataset(self, data, name: str, source: str, digest: str, targets=None, context: str = "training") -> None:
        """The run's training data on its Datasets tab: `data` a DataFrame, or arrays (with their `targets`);
        `digest` DVC's hash of `source`, its DVC output, so equal digests mean the same data."""
        import mlflow
        import pandas as pd

        def _log():
            if isinstance(data, pd.DataFrame):
                dataset = mlflow.data.from_pandas(data, source=source, name=name, digest=digest[:36])
            else:
                dataset = mlflow.data.from_numpy(data, source=source, targets=targets, name=name, digest=digest[:36])
            mlflow.log_input(dataset, context=context)

        self._safely("log_input", _log)

    def keras_callback(self):
        """A Keras callback logging every epoch's metrics under stable names."""
        import keras

        run = self

        class EpochMetrics(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                run.log_metrics(logs or {}, step=epoch + 1)  # epochs count from 1, as best_epoch does

        return EpochMetrics()


@contextlib.contextmanager
def stage_run(
    workload: str,
    stage: str,
    params: Mapping[str, Any] | None = None,
    inputs: list[str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[StageRun]:
    """An MLflow run for one DVC stage; yields a StageRun whose calls never raise."""
    configure_mlflow()
    import mlflow

    tags = {"dvc.stage": stage, "git.commit": git_commit(), "workload": workload, **(tags or {})}
    for path, digest in dvc_hashes(inputs or []).items():
        tags[f"dvc.input.{path}"] = digest
    if os.environ.get(FLOW_RUN_ENV):
        tags["prefect.flow_run_id"] = os.environ[FLOW_RUN_ENV]
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]

    tags[PROCESS_TAG] = this_process()

    run = StageRun(active=True, stage=stage)
    started = run._safely("start_run", _start, workload, stage, tags)
    try:
        if started:
            run.run_id = started.info.run_id
            client = mlflow.MlflowClient(tracking_uri())
            run._safely("closing runs of killed processes", close_ghost_runs, client, started)
            run.log_params(params or {})
        yield run
    except BaseException:
        _end(run, "FAILED")
        raise
    else:
        _end(run, "FINISHED")


def _end(run: StageRun, status: str) -> None:
    """End the run this process started, also when a logging call failed since (else it stays this process's active
    run, and the next stage_run in the process cannot start)."""
    import mlflow

    if run.active:
        run._safely("end_run", mlflow.end_run, status=status)
    elif run.run_id:
        with contextlib.suppress(Exception):  # its failure was reported already
            mlflow.end_run(status=status)


def _start(workload: str, stage: str, tags: dict[str, str]):
    import mlflow

    ensure_store(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.set_experiment(experiment_name(workload))
    # when two stages create the experiment at once, MLflow 3.17 returns it to the loser without making it
    # active (that stage's run would land in "Default"): activate it by id
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    wanted = experiment_tags(workload)
    if missing := {k: v for k, v in wanted.items() if k not in experiment.tags}:  # a user's edit stays
        from mlflow.exceptions import MlflowException

        try:
            mlflow.set_experiment_tags(missing)
        except MlflowException:
            # stages starting at once on a new experiment all set its tags, and a loser's insert fails (a UNIQUE
            # constraint): fine once the tags are there
            if not missing.keys() <= mlflow.get_experiment(experiment.experiment_id).tags.keys():
                raise
    parent = os.environ.get(PARENT_RUN_ENV) or None
    return mlflow.start_run(run_name=stage, tags=tags, parent_run_id=parent, nested=bool(parent))
