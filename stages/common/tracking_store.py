"""The MLflow store every stage run and the flow track to: where it is, creating its schema under a lock, and the
experiments' names and tags.

`MLFLOW_TRACKING_URI` overrides the default, `mlflow.db` in the repository root. `make ui` runs
`python -m stages.common.tracking_store` first: the store exists before MLflow's UI opens it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from stages.common import environment
from stages.common.cli import StageError

log = logging.getLogger("lesson5.tracking")
STORE_LOCK_TIMEOUT_S = 300  # creating the schema takes seconds; a holder that dies releases the lock at once
_STORES_READY: set[str] = set()


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

    configure_mlflow()
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


def experiment_tags(workload: str) -> dict[str, str]:
    """The tags a workload's experiment carries: its kind (model training) and its description."""
    return {**EXPERIMENT_KIND, "mlflow.note.content": DESCRIPTIONS.get(workload, "")}


def configure_mlflow() -> None:
    environment.apply_defaults()  # MLflow reads its retry and telemetry settings on import
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def warm_up(root: str | os.PathLike) -> None:
    """Import MLflow and open its store ahead of the first run: both take seconds (the SQLite store checks its
    schema), which the pipeline flow hides behind Prefect's start-up by calling this in a thread. Never raises."""
    configure_mlflow()
    try:
        import mlflow

        ensure_store(tracking_uri(root))
        mlflow.MlflowClient(tracking_uri(root)).get_experiment_by_name(experiment_name("pipeline"))
    except Exception as err:  # the real run reports tracking problems; this is only a head start
        log.debug("MLflow warm-up failed: %s", err)


if __name__ == "__main__":  # `make ui`: the store exists before the UI opens it (see ensure_store)
    ensure_store(tracking_uri())
