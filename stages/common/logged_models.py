"""The models a stage run logs in MLflow, each tagged with the sha256 of the DVC output it was logged from, and
found again by it: to log an evaluation onto the run that trained the model, and to offer it as the workload's
champion (stages/common/champion.py).

`ModelLogging` holds these methods of `StageRun` (stages/common/tracking.py), which mixes it in: they use its
`_safely`, `_named`, `stage` and `_logged`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path

from stages.common.tracking_store import experiment_name, tracking_uri

FILE_TAG = "lesson5.file_sha256"  # on a logged model: the sha256 of the DVC output it was logged from


def logged_model(client, workload: str, file_sha256: str):
    """The newest logged model of the workload's experiment logged from the model file with this sha256."""
    experiment = client.get_experiment_by_name(experiment_name(workload))
    logged = [
        m
        for m in client.search_logged_models([experiment.experiment_id], max_results=1000)
        if (m.tags or {}).get(FILE_TAG) == file_sha256
    ]
    if not logged:  # e.g. its train stage was restored from DVC's run-cache, which logs nothing
        raise LookupError(f"the evaluated model was never logged to {experiment.name}: rerun its train stage")
    return max(logged, key=lambda m: m.creation_timestamp)


class ModelLogging:
    """StageRun's calls that log a model, log onto its training run, or offer it as the champion."""

    def log_keras_model(self, model, name: str, step: int, path: str | os.PathLike) -> None:
        """The model under its own name (the compare view tells models apart), linked to the metrics of `step`, the
        epoch whose weights it holds, with its signature and an input example, and tagged with the sha256 of its DVC
        output `path` (what finds it again: `logged_model`)."""
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
