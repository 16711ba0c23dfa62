"""MLflow tracking shared by every training and evaluation stage.

One experiment per workload (`lesson5-<workload>`), one run per DVC stage, tagged
with the git commit, the DVC stage name and the DVC hashes of its inputs. When
the pipeline flow runs, each stage run is nested under the flow's parent run
(LESSON5_PARENT_RUN_ID). Tracking never costs a stage its outputs: if the
tracking server is unreachable the stage warns, goes on, and its DVC outputs and
metrics are written as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stages.common import environment
from stages.common.cli import StageError
from stages.common.resume import dvc_hashes

log = logging.getLogger("lesson5.tracking")
STORE_LOCK_TIMEOUT_S = 300  # creating the schema takes seconds; a holder that dies releases the lock at once
_STORES_READY: set[str] = set()
PARENT_RUN_ENV = "LESSON5_PARENT_RUN_ID"
PROCESS_TAG = "lesson5.process"  # the process that runs it: a RUNNING run whose process is gone is a ghost
SUPERSEDED_TAG = "lesson5.superseded_by"
FLOW_RUN_ENV = "LESSON5_FLOW_RUN_ID"
FILE_TAG = "lesson5.file_sha256"  # on a logged model: the sha256 of the DVC output it was logged from


def tracking_uri(root: str | os.PathLike | None = None) -> str:
    """MLFLOW_TRACKING_URI, else `mlflow.db` in `root` (default: the current folder, the repo root in stages).

    `dvc exp run --temp` and `dvc queue` run the stages in a copy of the workspace under <repo>/.dvc/tmp/exps/,
    deleted afterwards: their runs go to the repository's store, where the other runs are."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    return f"sqlite:///{environment.repository_root(root) / 'mlflow.db'}"


def ensure_store(uri: str) -> None:
    """Create (or find) the SQLite store's schema under a file lock beside the database, once per process.

    MLflow's tracking store builds a new SQLite schema without a lock, so two processes opening an empty store at
    once (the flow and `make ui`, two runs, a stage and a client) both migrate it and one fails ("duplicate column",
    alembic's "expected to match one row"). Whoever comes first here creates it; the others wait, then find it.
    A server URI is left alone: the server owns its schema.

    A new experiment's artifacts go to ./mlruns of the folder where the process first opened the store (MLflow keeps
    the store per URI): it is opened from the repository, not from the copy that `dvc exp run --temp` or `dvc queue`
    runs the stages in, whose ./mlruns (models, plots) would be deleted with it."""
    if not uri.startswith("sqlite:///") or uri in _STORES_READY:
        return
    from filelock import FileLock, Timeout

    _configure_mlflow()
    import mlflow

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{database}.lock", timeout=STORE_LOCK_TIMEOUT_S)
    try:
        with lock, contextlib.chdir(environment.repository_root()):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)  # opening an empty store creates its schema
    except Timeout:
        raise StageError(
            f"{lock.lock_file}: another process has been creating the MLflow store {database} for "
            f"{STORE_LOCK_TIMEOUT_S} s; let it finish (or stop it) and start again"
        ) from None
    _STORES_READY.add(uri)


def experiment_name(workload: str) -> str:
    return f"lesson5-{workload}"


# Shown on each experiment's page. MLflow 3's UI takes an experiment without a kind for a GenAI one (traces,
# "Agent versions"); the kind tag makes it open as model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
DESCRIPTIONS = {
    "movielens": "MovieLens collaborative filtering (fast.ai Lesson 5): dot product, dot + biases + L2, a neural net; "
    "baselines, evaluation, and the analysis of the bias model's embeddings. One run per DVC stage.",
    "imdb": "IMDB sentiment (fast.ai Lessons 5-6): single hidden layer, 1-D CNN, GloVe CNN, multi-size CNN, LSTM, "
    "and the NB-SVM baseline. One run per DVC stage.",
    "glove": "GloVe 6B word vectors: the embedding matrix for IMDB's vocabulary and a t-SNE map of words.",
    "dogscats": "Dogs vs Cats (fast.ai Lesson 3): VGG16 features, dense heads with BatchNorm inserted without "
    "changing their function, optional block-5 fine-tuning. One run per DVC stage.",
    "text": "RNNs on Nietzsche (fast.ai Lesson 6): the 3-character merge model, unrolled RNN, SimpleRNN, char and "
    "word LSTMs, with generated samples. One run per DVC stage.",
    "pipeline": "Runs of the Prefect flow over dvc.yaml: what ran, was skipped or failed, and how long each took.",
}


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


class StageRun:
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

    def log_keras_model(self, model, name: str, step: int, path: str | os.PathLike) -> None:
        """The model under its own name (the compare view tells models apart), linked to the metrics of `step`, the
        epoch whose weights it holds, with its signature and an input example, and tagged with the sha256 of its DVC
        output `path` (what finds it again: stages/common/champion.py)."""
        import keras
        import mlflow.keras
        import tensorflow as tf
        from mlflow.models import Model

        def save_model(path, **kwargs):  # MLflow 3.17's Keras flavour writes the input example into the model's
            os.makedirs(path, exist_ok=True)  # folder before creating it (mlflow/mlflow#16183): create it first
            mlflow.keras.save_model(path=path, **kwargs)

        requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
        self._safely(
            "log_model",
            Model.log,
            artifact_path=None,
            name=name,
            flavor=types.SimpleNamespace(__name__="mlflow.keras", save_model=save_model),
            model=model,
            step=step,
            signature=keras_signature(model),
            input_example=keras_input_example(model),
            tags={FILE_TAG: file_sha256(path)},
            pip_requirements=requirements,
        )

    def log_text_model(self, keras_path: str, code: str, name: str, step: int) -> None:
        """A model that reads raw text, as MLflow "models from code" (`code`: the file defining its pyfunc, with
        the project's `stages` package shipped beside it; the .keras file its artifact): no pickle."""
        import keras
        import mlflow.pyfunc
        import pandas as pd
        import tensorflow as tf

        requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"pandas=={pd.__version__}"]
        self._safely(
            "log_model",
            mlflow.pyfunc.log_model,
            name=name,
            step=step,
            tags={FILE_TAG: file_sha256(keras_path)},
            python_model=code,
            artifacts={"keras_model": keras_path},
            code_paths=["stages"],
            pip_requirements=requirements,
            input_example=pd.DataFrame({"review": ["Not bad at all: a fine film."]}),
        )

    def log_onto_training_run(
        self,
        workload: str,
        model_file: str | os.PathLike,
        metrics: Mapping[str, float],
        artifacts: Mapping[str, str | os.PathLike] | None = None,
    ) -> None:
        """The evaluation's figures (and `artifacts`: MLflow name -> file) also on the run that trained the model
        (found by the sha256 of `model_file`): one row of the MLflow UI then holds a model's params, curves and
        evaluation. A name the training run already has (its per-epoch `val_loss`, ...) is left out: one name, one
        quantity."""
        import mlflow
        from mlflow.entities import Metric

        def _log():
            client = mlflow.MlflowClient(tracking_uri())
            try:
                trained = self._logged_model(client, workload, model_file).source_run_id
            except LookupError as err:  # not an outage: this stage's other logging goes on
                print(f"WARNING: {self.stage}: not logged onto a training run: {err}", file=sys.stderr)
                return
            now = int(time.time() * 1000)
            has = client.get_run(trained).data.metrics
            new = {k: v for k, v in self._named(metrics).items() if k not in has}
            client.log_batch(trained, metrics=[Metric(k, v, now, 0) for k, v in new.items()])
            for artifact_file, path in (artifacts or {}).items():
                with named_copy(path, artifact_file) as (named, folder):
                    client.log_artifact(trained, named, folder)

        self._safely("logging onto the training run", _log)

    def _logged_model(self, client, workload: str, model_file: str | os.PathLike):
        """The LoggedModel of `model_file` (by its sha256), hashed and searched once however many calls need it."""
        from stages.common.champion import logged_model

        key = str(model_file)
        if key not in self._logged:
            self._logged[key] = logged_model(client, workload, file_sha256(model_file))
        return self._logged[key]

    def offer_champion(
        self,
        workload: str,
        model_file: str | os.PathLike,
        validation: tuple[str, float],
        higher_is_better: bool,
        figures: Mapping[str, float] | None = None,
    ) -> None:
        """The evaluated model (`model_file`, the DVC output) becomes the workload's registered champion if it beats
        the current one on `validation` (stages/common/champion.py)."""
        import mlflow

        from stages.common.champion import offer

        def _offer():
            client = mlflow.MlflowClient(tracking_uri())
            try:
                model = self._logged_model(client, workload, model_file)
                offer(client, workload, model, validation, higher_is_better, figures)
            except LookupError as err:  # not an outage: this stage's other logging goes on
                print(f"WARNING: {self.stage}: no champion offer: {err}", file=sys.stderr)

        self._safely("registering the champion", _offer)

    def keras_callback(self):
        """A Keras callback logging every epoch's metrics under stable names."""
        import keras

        run = self

        class EpochMetrics(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                run.log_metrics(logs or {}, step=epoch + 1)  # epochs count from 1, as best_epoch does

        return EpochMetrics()


@contextlib.contextmanager
def named_copy(path: str | os.PathLike, artifact_file: str) -> Iterator[tuple[str, str | None]]:
    """(a copy of `path` named as `artifact_file`'s last part, its artifact folder): a file named after its model on
    disk gets the same artifact name in every run, so MLflow's compare view lines the runs' artifacts up."""
    with tempfile.TemporaryDirectory() as tmp:
        named = Path(tmp) / Path(artifact_file).name
        shutil.copyfile(path, named)
        yield str(named), (str(Path(artifact_file).parent) if "/" in artifact_file else None)


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def keras_signature(model):
    """The MLflow signature of a Keras model, read from its input and output tensors (named when several)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(tensor, named: bool):
        shape = (-1, *(-1 if d is None else d for d in tensor.shape[1:]))  # -1: any length (a batch, a sequence)
        return TensorSpec(np.dtype(tensor.dtype), shape, tensor.name if named else None)

    named = len(model.inputs) > 1
    return ModelSignature(
        inputs=Schema([spec(t, named) for t in model.inputs]), outputs=Schema([spec(t, False) for t in model.outputs])
    )


def keras_input_example(model):
    """One input of the right shape and type for a Keras model (zeros: a valid id, a blank image or sequence; a
    dimension of any length is 1), by input name when there are several."""
    import numpy as np

    def example(tensor):
        return np.zeros((1, *(1 if d is None else d for d in tensor.shape[1:])), np.dtype(tensor.dtype))

    if len(model.inputs) > 1:
        return {t.name: example(t) for t in model.inputs}
    return example(model.inputs[0])


def _configure_mlflow() -> None:
    environment.apply_defaults()  # MLflow reads its retry and telemetry settings on import
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def warm_up(root: str | os.PathLike) -> None:
    """Import MLflow and open its store ahead of the first run: both take seconds (the SQLite store checks its
    schema), which the pipeline flow hides behind Prefect's start-up by calling this in a thread. Never raises."""
    _configure_mlflow()
    try:
        import mlflow

        ensure_store(tracking_uri(root))
        mlflow.MlflowClient(tracking_uri(root)).get_experiment_by_name(experiment_name("pipeline"))
    except Exception as err:  # the real run reports tracking problems; this is only a head start
        log.debug("MLflow warm-up failed: %s", err)


@contextlib.contextmanager
def stage_run(
    workload: str,
    stage: str,
    params: Mapping[str, Any] | None = None,
    inputs: list[str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[StageRun]:
    """An MLflow run for one DVC stage; yields a StageRun whose calls never raise."""
    _configure_mlflow()
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


def this_process() -> str:
    """host:pid:start time: names one process for good (a pid alone is reused)."""
    import psutil

    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.3f}"


def _is_alive(process: str) -> bool:
    import psutil

    host, pid, created = process.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's process: not ours to judge
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" == created
    except psutil.NoSuchProcess:
        return False


def close_ghost_runs(client, new_run) -> list[str]:
    """Mark KILLED the runs of this stage that are still RUNNING although their process is gone (killed with
    SIGKILL, a power cut: nothing could end them), tagged with the run that superseded them. Returns their ids."""
    stage = new_run.data.tags["dvc.stage"]
    ghosts = [
        old.info.run_id
        for old in client.search_runs(
            [new_run.info.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`dvc.stage` = '{stage}'",
        )
        if old.info.run_id != new_run.info.run_id
        and PROCESS_TAG in old.data.tags
        and not _is_alive(old.data.tags[PROCESS_TAG])
    ]
    for run_id in ghosts:
        client.set_tag(run_id, SUPERSEDED_TAG, new_run.info.run_id)
        client.set_terminated(run_id, status="KILLED")
    return ghosts


def experiment_tags(workload: str) -> dict[str, str]:
    """The tags a workload's experiment carries: its kind (model training) and its description."""
    return {**EXPERIMENT_KIND, "mlflow.note.content": DESCRIPTIONS.get(workload, "")}


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


# The figure each workload's models are judged by (True: higher is better), summarised on the flow's parent runs
HEADLINES = {
    "movielens": {"val_mse": False},
    "imdb": {"val_accuracy": True, "test_accuracy": True},
    "text": {"val_loss_per_char": False, "bits_per_char": False, "val_loss_per_word": False},
    "dogscats": {"val_accuracy": True, "val_log_loss": False},
}


class WorkloadParents:
    """The flow's parent run in each workload's experiment, created when that workload's first stage command starts
    (a no-change run adds none), so each experiment shows its stage runs nested under the flow run that made them.
    `finish` ends them with a table of their children's headline figures and the best one on the parent."""

    def __init__(self, pipeline_run_id: str | None, tags: Mapping[str, str]):
        self.pipeline_run_id, self.tags = pipeline_run_id, dict(tags)
        self.runs: dict[str, str] = {}
        self._lock = threading.Lock()

    def run_id(self, workload: str) -> str | None:
        """The workload's parent run id (created on the first call), or None when tracking is unavailable."""
        with self._lock:
            if workload not in self.runs and self.pipeline_run_id:
                try:
                    self.runs[workload] = self._create(workload)
                except Exception as err:  # tracking never stops the pipeline
                    print(f"WARNING: MLflow parent run for {workload} not created ({err})", file=sys.stderr)
                    self.pipeline_run_id = None
            return self.runs.get(workload)

    def _create(self, workload: str) -> str:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri())
        name = experiment_name(workload)
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name, tags=experiment_tags(workload))
        tags = {**self.tags, "mlflow.parentRunId": self.pipeline_run_id, "workload": workload}
        return client.create_run(experiment_id, run_name="pipeline", tags=tags).info.run_id

    def finish(self, failed: set[str]) -> None:
        """End each parent (FAILED when its workload is in `failed`: a stage of it did not finish), with its
        children's headline figures as the table `summary.json` and the best of each on the parent itself."""
        import mlflow

        client = mlflow.MlflowClient(tracking_uri())
        for workload, run_id in self.runs.items():
            try:
                self._summarise(client, workload, run_id)
            except Exception as err:
                print(f"WARNING: MLflow summary of {workload} not logged ({err})", file=sys.stderr)
            status = "FAILED" if workload in failed else "FINISHED"
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, status)

    @staticmethod
    def _summarise(client, workload: str, run_id: str) -> None:
        import pandas as pd

        headlines = HEADLINES.get(workload, {})
        children = client.search_runs(
            [client.get_run(run_id).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
        )
        rows = [
            {"run": child.info.run_name, **{k: child.data.metrics[k] for k in headlines if k in child.data.metrics}}
            for child in children
            if "_evaluate" not in child.info.run_name  # its figures are on the training run too
        ]
        rows = [row for row in rows if len(row) > 1]
        if not rows:
            return
        table = pd.DataFrame(rows).sort_values("run")
        client.log_table(run_id, table, "summary.json")
        for metric, higher_is_better in headlines.items():
            if metric in table and table[metric].notna().any():
                best = table.loc[table[metric].idxmax() if higher_is_better else table[metric].idxmin()]
                client.log_metric(run_id, metric, float(best[metric]))
                client.set_tag(run_id, f"lesson5.best.{metric}", best["run"])


if __name__ == "__main__":  # `make ui`: the store exists before the UI opens it (see ensure_store)
    ensure_store(tracking_uri())
