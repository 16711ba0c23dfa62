"""Faults in real runs of the MovieLens chain: a training stage killed with SIGKILL mid-epoch resumes and ends
within noise of an uninterrupted run; a dead MLflow server costs no output and no minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
import yaml

from pipelines.server import free_port
from tests.conftest import (
    REPO,
    LoopbackServer,
    Project,
    backed_up_epochs,
    clone_project,
    kill_when_backed_up,
    new_project,
    stage_runs_by_status,
)
from tests.factories.movielens import movielens_zip, ratings_table

STAGE = "movielens_train@bias"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, empty_mlflow_store):
    """A project copy with generated ratings downloaded and prepared by `dvc repro`, and one small bias model
    whose epochs are slow enough (batch 16) to be killed in the middle of one."""
    server = LoopbackServer(tmp_path_factory.mktemp("www"))
    url, sha = server.add("ml-latest-small.zip", movielens_zip(ratings_table(n_users=120, n_movies=80, per_user=40)))
    project = new_project(tmp_path_factory.mktemp("faults") / "project", empty_mlflow_store)
    bias = {
        **project.params["movielens"]["models"]["bias"],
        "factors": 8,
        "epochs": 6,
        "batch_size": 16,
        "lr_schedule": [[0, 0.01]],
        "early_stopping_patience": None,
    }
    project.set_params(
        {
            "movielens.sources.ml-latest-small": {"url": url, "sha256": sha},
            "movielens.models": {"bias": bias},
            "movielens.analyze.model": "bias",
        }
    )
    project.dvc("repro", "movielens_prepare")
    yield project
    server.close()


def train_metrics(project: Project) -> dict:
    return json.loads((project.root / "data/movielens/metrics/train_bias.json").read_text())


@pytest.mark.slow
def test_killed_training_resumes_and_matches_an_uninterrupted_run(prepared):
    project = prepared
    backup = project.root / ".cache" / "backup" / STAGE
    outputs = [
        project.root / "data/movielens/models/bias.keras",
        project.root / "data/movielens/metrics/train_bias.json",
        project.root / "data/movielens/history/bias.csv",
    ]
    kill_when_backed_up(project, STAGE, lambda backup: backed_up_epochs(backup) > 0)
    done = backed_up_epochs(project.root / ".cache/backup" / STAGE)
    assert done < 6
    assert not any(path.exists() for path in outputs), "a killed stage left an output"
    assert not list((project.root / "data/movielens").rglob(".*tmp*"))

    result = project.dvc("repro", STAGE)
    assert f"{STAGE}: resuming after epoch" in result.stdout, result.stdout[-3000:]
    resumed_at = int(result.stdout.split("resuming after epoch ")[1].split()[0])
    assert done <= resumed_at < 6
    assert f"Epoch {resumed_at + 1}/6" in result.stdout and "Epoch 1/6" not in result.stdout
    assert not backup.exists()  # cleaned after success
    # the killed process's run, left RUNNING, is closed by the rerun and points at the run that superseded it
    runs = stage_runs_by_status(project, "movielens", STAGE)
    assert sorted(runs) == ["FINISHED", "KILLED"] and len(runs["KILLED"]) == 1
    assert runs["KILLED"][0].data.tags["lesson5.superseded_by"] == runs["FINISHED"][0].info.run_id
    history = (project.root / "data/movielens/history/bias.csv").read_text().splitlines()
    assert len(history) == 1 + 6  # the whole run's epochs, not just the resumed ones
    resumed = train_metrics(project)

    # the same stage uninterrupted; a backup left by other params (say, changed after a kill) must not be resumed
    stale = backup / "0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / "training_metadata.json").write_text('{"epoch": 5, "batch": -1}')
    result = project.dvc("repro", "--force", "--single-item", STAGE)
    assert "resuming" not in result.stdout and "Epoch 1/6" in result.stdout and not stale.exists()
    uninterrupted = train_metrics(project)
    assert resumed["best_val_mse"] == pytest.approx(uninterrupted["best_val_mse"], abs=0.05)
    # dvc.lock stays consistent through the kill and the reruns: nothing is stale afterwards
    assert project.dvc("status", STAGE).stdout.strip().endswith("Data and pipelines are up to date.")
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    assert STAGE in lock["stages"] and "movielens_prepare" in lock["stages"]
    assert project.dvc("repro", STAGE).stdout.count("didn't change, skipping") >= 1


@pytest.mark.slow
def test_unreachable_mlflow_costs_no_output_and_relogging_works(prepared, tmp_path):
    project = clone_project(prepared, tmp_path / "project")
    project.set_params({"movielens.models.bias.epochs": 1})  # the subject is tracking: one epoch shows it
    for path in (project.root / "data/movielens/metrics").glob("train_bias.json"):
        path.unlink()
    env = {**project.env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [sys.executable, "-m", "stages.movielens.train", "bias"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: MLflow start_run failed" in result.stderr
    assert "the stage goes on, its DVC outputs are written" in result.stderr
    assert f"re-log it with `dvc repro --force --single-item {STAGE}`" in result.stderr
    assert train_metrics(project)["best_val_mse"] > 0
    assert (project.root / "data/movielens/models/bias.keras").stat().st_size > 0

    # the documented re-log, once the server is back (here: the project's own store)
    project.dvc("repro", "--force", "--single-item", STAGE)
    runs = [run for by_status in stage_runs_by_status(project, "movielens", STAGE).values() for run in by_status]
    relogged = max(runs, key=lambda run: run.info.start_time)
    assert relogged.info.status == "FINISHED" and relogged.data.metrics["val_mse"] > 0  # the re-logged run is complete


@pytest.mark.slow
def test_tracking_gives_up_on_a_dead_server_in_seconds(tmp_path):
    code = textwrap.dedent("""
        import time, mlflow
        from stages.common.tracking import stage_run
        for attempt in range(2):  # the second one is timed: the first also pays for MLflow's lazy imports
            started = time.monotonic()
            with stage_run("movielens", "x", params={"a": 1}) as run:
                run.log_metrics({"m": 1.0})
                run.log_text("t", "t.txt")
        print("ELAPSED", time.monotonic() - started, run.active)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        env.pop(key, None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    elapsed, active = result.stdout.split("ELAPSED")[1].split()
    assert active == "False" and "WARNING: MLflow start_run failed" in result.stderr
    assert float(elapsed) < 20  # MLflow's own defaults (7 retries, backoff x2) would retry for over 4 minutes


@pytest.mark.slow
def test_a_stage_that_loses_the_experiment_creation_race_still_tracks_into_its_experiment(tmp_path):
    """Two stages starting together both find no experiment and both create it; MLflow hands the loser the
    experiment without activating it. Simulated here: the lookup misses once while the experiment exists."""
    code = textwrap.dedent("""
        import mlflow
        from mlflow.tracking._tracking_service.client import TrackingServiceClient
        from stages.common.tracking import stage_run
        existing = mlflow.MlflowClient().create_experiment("lesson5-movielens")  # the winner's
        lookup = TrackingServiceClient.get_experiment_by_name
        misses = ["lesson5-movielens"]
        TrackingServiceClient.get_experiment_by_name = (
            lambda self, name: None if name in misses and not misses.remove(name) else lookup(self, name))
        with stage_run("movielens", "movielens_train@dot") as run:
            pass
        print("EXPERIMENTS", existing, mlflow.MlflowClient().get_run(run.run_id).info.experiment_id, len(misses))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    created, used, misses_left = result.stdout.split("EXPERIMENTS")[1].split()
    assert misses_left == "0", result.stderr  # the creation race was taken
    assert used == created  # not "0", MLflow's Default experiment


def test_a_stage_that_loses_the_race_to_tag_a_new_experiment_still_tracks_into_it(tmp_path, mlflow_store):
    """Stages starting together on a new experiment all find it untagged and all tag it; a loser's insert fails
    on a UNIQUE constraint (seen once in the run below). Simulated here: the winner's tags land while the loser's
    call is under way, which then fails as the store fails it."""
    code = textwrap.dedent("""
        import mlflow
        from mlflow.exceptions import MlflowException
        from stages.common.tracking import stage_run
        from stages.common.tracking_store import experiment_tags
        experiment = mlflow.MlflowClient().create_experiment("lesson5-movielens")  # the winner's, not tagged yet
        def tagged_meanwhile(tags):
            for key, value in experiment_tags("movielens").items():
                mlflow.MlflowClient().set_experiment_tag(experiment, key, value)
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: experiment_tags.key, "
                                  "experiment_tags.experiment_id")
        mlflow.set_experiment_tags = tagged_meanwhile
        with stage_run("movielens", "movielens_train@dot") as run:
            pass
        print("RUN", experiment, mlflow.MlflowClient().get_run(run.run_id).info.experiment_id)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": mlflow_store}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert "UNIQUE constraint failed" not in result.stderr and "WARNING: MLflow" not in result.stderr, result.stderr
    created, used = result.stdout.split("RUN")[1].split()
    assert used == created


@pytest.mark.slow  # processes importing MLflow
def test_processes_opening_an_empty_store_at_once_all_track_into_it(tmp_path):
    """MLflow builds a new SQLite schema without a lock: processes that open an empty store together both migrate
    it and one fails (this test's rounds fail every time without the project's lock). Four stage runs start at
    once on a new store, three times over; every run is recorded."""
    code = textwrap.dedent("""
        import multiprocessing, os, sys
        import mlflow
        from stages.common.tracking import stage_run

        def track(uri, results):
            os.environ["MLFLOW_TRACKING_URI"] = uri
            with stage_run("movielens", "movielens_train@dot") as run:
                run.log_metrics({"val_mse": 1.0})
            results.put(run.run_id)

        fork = multiprocessing.get_context("fork")  # mlflow imported once; each child opens the store itself
        for round in range(3):
            uri, results = f"sqlite:///{os.getcwd()}/round{round}/mlflow.db", fork.Queue()
            children = [fork.Process(target=track, args=(uri, results)) for _ in range(4)]
            [child.start() for child in children]
            [child.join() for child in children]
            run_ids = {results.get(timeout=5) for _ in children}
            recorded = {r.info.run_id for r in mlflow.MlflowClient(uri).search_runs(
                [mlflow.MlflowClient(uri).get_experiment_by_name("lesson5-movielens").experiment_id])}
            print("ROUND", round, len(run_ids - {None}), len(recorded & run_ids))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    rounds = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("ROUND")]
    assert rounds == [["0", "4", "4"], ["1", "4", "4"], ["2", "4", "4"]], result.stderr[-3000:]
    assert "WARNING: MLflow" not in result.stderr, result.stderr[-3000:]  # no stage gave up on tracking


def test_only_runs_whose_process_is_gone_are_closed_as_ghosts(tmp_path, mlflow_store):
    from stages.common import ghost_runs

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = ghost_runs.this_process().rsplit(":", 2)[0]
    processes = {
        "killed": f"{host}:{dead.stdout.strip()}:1.000",  # a pid that no longer runs
        "alive": ghost_runs.this_process(),  # the same stage running at once elsewhere (a DVC queue worker)
        "reused pid": f"{host}:{os.getpid()}:1.000",  # our pid, another start time: a killed process's pid reused
        "other host": f"some-other-machine:{os.getpid()}:1.000",  # not ours to judge
    }
    client = mlflow.MlflowClient(mlflow_store)
    experiment = client.create_experiment("lesson5-movielens")
    runs = {
        name: client.create_run(experiment, tags={"dvc.stage": STAGE, ghost_runs.PROCESS_TAG: process}).info.run_id
        for name, process in processes.items()
    }
    new = client.create_run(experiment, tags={"dvc.stage": STAGE, ghost_runs.PROCESS_TAG: ghost_runs.this_process()})
    assert sorted(ghost_runs.close_ghost_runs(client, client.get_run(new.info.run_id))) == sorted(
        [runs["killed"], runs["reused pid"]]
    )
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"killed": "KILLED", "alive": "RUNNING", "reused pid": "KILLED", "other host": "RUNNING"}
    assert client.get_run(runs["killed"]).data.tags[ghost_runs.SUPERSEDED_TAG] == new.info.run_id


@pytest.mark.slow
def test_a_benchmarks_throwaway_mlflow_store_takes_its_runs_and_leaves_the_users_store_and_disk_alone(tmp_path):
    code = textwrap.dedent("""
        import os, mlflow
        from benchmarks.common import throwaway_mlflow_store
        from stages.common.tracking import stage_run
        try:
            with throwaway_mlflow_store() as uri:
                folder = uri.removeprefix("sqlite:///").rsplit("/", 1)[0]
                with stage_run("imdb", "benchmark@cnn") as run:
                    run.log_metrics({"reviews_per_s": 1.0})
                logged = mlflow.MlflowClient(uri).get_run(run.run_id).data.metrics
                raise KeyboardInterrupt  # an interrupted benchmark still removes the store
        except KeyboardInterrupt:
            pass
        print("RESULT", logged["reviews_per_s"], os.path.exists(folder), os.environ["MLFLOW_TRACKING_URI"])
    """)
    user_store = f"sqlite:///{tmp_path / 'user.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": user_store}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.stdout.split("RESULT")[1].split() == ["1.0", "False", user_store], result.stderr
    assert not (tmp_path / "user.db").exists()  # nothing was logged into the user's store


def tiny_fit(tmp_path, monkeypatch, epochs: int, extra_callback=None):
    """A one-unit Keras model fitted with the stages' resume callbacks, backing up under tmp_path."""
    import keras
    import numpy as np

    from stages.common import resume, training

    monkeypatch.setattr(resume, "BACKUP_ROOT", tmp_path / "backup")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    callbacks = training.resume_callbacks("tiny", {"a": 1}) + ([extra_callback] if extra_callback else [])
    x = np.linspace(0, 1, 32, dtype="float32")[:, None]
    return model.fit(x, 2 * x, epochs=epochs, verbose=0, callbacks=callbacks)


def test_a_truncated_backup_is_discarded_not_fatal(tmp_path, monkeypatch, capsys):
    """A backup that cannot be read (say, truncated by a full disk) restarts training instead of failing every rerun."""
    import keras

    class KillAfterTwoEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_fit(tmp_path, monkeypatch, epochs=4, extra_callback=KillAfterTwoEpochs())
    (folder,) = (tmp_path / "backup" / "tiny").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch_logs.json",
        "latest.weights.h5",
        "training_metadata.json",
    ]  # no temporary left behind
    weights = folder / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[:96])

    history = tiny_fit(tmp_path, monkeypatch, epochs=4)
    out = capsys.readouterr().out
    assert "is unreadable" in out and "training starts from epoch 1" in out and "resuming" not in out
    assert history.epoch == [0, 1, 2, 3]
    assert not (tmp_path / "backup" / "tiny").exists()


def test_a_kill_while_the_backup_is_written_keeps_the_previous_epochs_backup(tmp_path, monkeypatch, capsys):
    """Keras writes its backup in place; a SIGKILL mid-write (CI saw it) left a 96-byte .h5 that failed every rerun."""
    import keras

    class KillDuringTheSecondBackup(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:

                def half_written(filepath, overwrite=True):
                    Path(filepath).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 88)
                    raise KeyboardInterrupt

                self.model.save_weights = half_written

    with pytest.raises(KeyboardInterrupt):
        tiny_fit(tmp_path, monkeypatch, epochs=4, extra_callback=KillDuringTheSecondBackup())
    capsys.readouterr()
    history = tiny_fit(tmp_path, monkeypatch, epochs=4)
    out = capsys.readouterr().out
    assert "resuming after epoch 1" in out and "unreadable" not in out
    assert len(history.history["loss"]) == 4


def test_a_backup_made_by_other_code_params_or_data_is_never_resumed(tmp_path, monkeypatch):
    from stages.common import resume

    monkeypatch.chdir(tmp_path)
    code = tmp_path / "stages" / "workload" / "train.py"
    code.parent.mkdir(parents=True)
    code.write_text("EPOCHS = 1\n")
    fingerprint = {"params": {"epochs": 3}, "data": {"data/prepared": "abc.dir"}}
    first = resume.backup_folder("workload_train@m", fingerprint)
    first.mkdir(parents=True)
    assert resume.backup_folder("workload_train@m", fingerprint) == first and first.is_dir()  # same: resumed
    for changed in (
        {"params": {"epochs": 4}, "data": fingerprint["data"]},
        {"params": fingerprint["params"], "data": {"data/prepared": "abd.dir"}},
    ):
        other = resume.backup_folder("workload_train@m", changed)
        assert other != first and not first.exists()  # the old backup is deleted, never resumed
        first.mkdir(parents=True)
    code.write_text("EPOCHS = 2\n")
    assert resume.backup_folder("workload_train@m", fingerprint) != first and not first.exists()
