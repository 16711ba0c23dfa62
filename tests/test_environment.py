"""The locked environment: the two TensorFlow builds resolve apart, and the DVC runner refuses a DVC whose
internals it does not know (`make install` runs `uv sync --locked`, which fails when pyproject.toml and uv.lock
disagree). The process environment: defaults in one place, native noise kept out of the terminal."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from pipelines.dvc_runner import DvcInternalsError, DvcRunner, check_dvc_internals
from pipelines.stage_deps import command_module, stage_definitions
from stages.common import environment
from tests.conftest import REPO

UV = Path(sys.executable).parent / "uv"


def locked_requirements(extra: str) -> set[str]:
    out = subprocess.run(
        [str(UV), "export", "--frozen", "--no-hashes", "--no-emit-project", "--extra", extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("==")[0] for line in out.splitlines() if "==" in line}


def test_cpu_and_gpu_builds_resolve_apart_from_the_lock():
    cpu, gpu = locked_requirements("cpu"), locked_requirements("gpu")
    assert "tensorflow-cpu" in cpu and not any(name.startswith("nvidia-") for name in cpu)
    assert "tensorflow-cpu" not in gpu and "tensorflow" in gpu and "nvidia-cudnn-cu12" in gpu
    conflict = subprocess.run(
        [str(UV), "export", "--frozen", "--extra", "cpu", "--extra", "gpu"], cwd=REPO, capture_output=True, text=True
    )
    assert conflict.returncode != 0 and "conflict" in conflict.stderr.lower()


@pytest.mark.parametrize("remote", ["s3", "ssh", "gs", "azure"])
def test_each_dvc_remote_plugin_is_a_locked_extra_beside_either_tensorflow_build(remote):
    assert f"dvc-{remote}" in locked_requirements(remote) - locked_requirements("cpu")
    both = subprocess.run(
        [str(UV), "export", "--frozen", "--no-emit-project", "--extra", remote, "--extra", "gpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert both.returncode == 0 and f"dvc-{remote}==" in both.stdout, both.stderr


def test_the_installed_dvc_has_the_internals_the_runner_drives():
    check_dvc_internals()


def test_a_dvc_whose_internals_changed_is_refused_naming_each_missing_one(monkeypatch, tmp_path):
    from dvc.dvcfile import Lockfile
    from dvc.repo import Repo

    monkeypatch.delattr(Repo, "_reset")
    monkeypatch.setattr(Lockfile, "dump_stages", lambda self, **kwargs: None)  # no stages parameter
    with pytest.raises(DvcInternalsError) as err:
        DvcRunner(tmp_path)
    message = str(err.value)
    assert "dvc.repo.Repo._reset" in message and "dvc.dvcfile.Lockfile.dump_stages(stages)" in message
    assert "make install" in message and "dvc repro" in message


@pytest.mark.slow
def test_a_stage_process_keeps_tensorflows_import_noise_out_of_the_terminal_and_its_errors_in(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    noisy = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert any(environment.HARMLESS.match(line) for line in noisy.stderr.splitlines())  # the noise is real
    stage = subprocess.run(
        [sys.executable, "-m", "stages.movielens.evaluate", "bias"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert stage.returncode == 1
    lines = stage.stderr.splitlines()
    assert not any(environment.HARMLESS.match(line) for line in lines), stage.stderr
    assert lines[-1].startswith("error: data/movielens/models/bias.keras: no such model")  # the stage's own error


def test_the_filter_passes_progress_redraws_at_once_and_drops_only_whole_harmless_lines():
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    forwarder = threading.Thread(target=environment._forward, args=(read_end, out_write))
    forwarder.start()

    def written(data: bytes) -> bytes:
        os.write(write_end, data)
        time.sleep(0.2)
        return os.read(out_read, 65536) if select.select([out_read], [], [], 1)[0] else b""

    assert written(b"\r 10%|#   | 1/10") == b"\r 10%|#   | 1/10"  # a bar redrawn without a newline: shown now
    assert written(b"I0000 00:00:1795901358.684509   28958 port.cc:153] oneDNN custom ") == b""  # held, judged whole
    assert (
        written(b"operations are on. You may see slightly different numerical results\nEpoch 1/2\n") == b"Epoch 1/2\n"
    )
    assert (
        written(b"I0000 00:00:1.2   7 other.cc:1] something else\n")
        == b"I0000 00:00:1.2   7 other.cc:1] something else\n"
    )
    os.close(write_end)
    forwarder.join(timeout=5)
    assert not forwarder.is_alive()


@pytest.mark.parametrize(
    "line",
    [
        "E0000 00:00:1795910038.127532   12992 tfg_optimizer_hook.cc:135] tfg_optimizer{any(tfg-consolidate-attrs,"
        "tfg-toposort)} failed: INVALID_ARGUMENT: Node simple_rnn_1/rnn_1/while/body/_1/simple_rnn_cell_1/add",
        "E0000 00:00:1795912390.450675   22558 util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512. "
        "Falling back to the default Eigen-based implementation if present.",
    ],
)
def test_tensorflows_optimiser_fallbacks_seen_in_a_full_run_count_as_noise(line):
    assert environment.HARMLESS.match(line)
    real_error = "E0000 00:00:1.2   7 op_kernel.cc:1] OP_REQUIRES failed at strided_slice_op.cc:1 : INVALID_ARGUMENT"
    assert not environment.HARMLESS.match(real_error)


def mlflow_advice(quiet: bool) -> list[str]:
    """The warnings that the MLflow calls every stage makes raise (a local file as a dataset's source, integer
    ids in a signature), with or without the stage processes' filter."""
    import mlflow
    import pandas as pd

    ids = pd.DataFrame({"user": [1, 2], "movie": [3, 4]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if quiet:
            environment.ignore_harmless_warnings()
        mlflow.data.from_pandas(ids, source="/tmp/ratings.parquet", name="ratings")
        mlflow.models.infer_signature(ids, ids["user"].to_numpy(dtype="float32"))
        warnings.warn("a warning the user should read", UserWarning, stacklevel=1)
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_mlflows_advice_stays_out_of_a_stage_process_and_other_warnings_pass():
    noisy = mlflow_advice(quiet=False)
    for advice in environment.HARMLESS_WARNINGS:
        assert any(advice in message for message in noisy), (advice, noisy)  # each is what MLflow says today
    assert mlflow_advice(quiet=True) == ["a warning the user should read"]
    # MLflow's advice to type predict's input is taken, not hidden: it shows "once" whatever the filters say
    nbsvm = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import stages.imdb.nbsvm_serving"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Add type hints" not in nbsvm.stderr, nbsvm.stderr


def test_logging_reconfigured_after_importing_keras_leaves_pytests_capture_open(capsys):
    """Prefect's and MLflow's logging set-up (logging.config.dictConfig) closes every handler ever made; absl's
    (Keras imports absl) would close pytest's captured stderr with it, and the test run with it (tests/conftest.py)."""
    import logging.config

    import keras  # noqa: F401

    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    print("still captured", file=sys.stderr)
    assert capsys.readouterr().err == "still captured\n"


# Imports each stage module afresh as its process would (the variable unset, then set by the user), then configures
# TensorFlow's devices, which it refuses once any import has set them up (and read the variable) already.
GROWTH_PROBE = """
import importlib, json, os, sys
import tensorflow as tf
seen = {}
for users in ("", "false"):
    for module in sys.argv[1:]:
        for name in [m for m in sys.modules if m.split(".")[0] == "stages"]:
            del sys.modules[name]
        os.environ.pop("TF_FORCE_GPU_ALLOW_GROWTH", None)
        os.environ.update({"TF_FORCE_GPU_ALLOW_GROWTH": users} if users else {})
        importlib.import_module(module)
        seen.setdefault(users or "unset", {})[module] = os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH")
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_every_stage_process_lets_tensorflow_grow_gpu_memory_before_it_sets_up_a_gpu_and_keeps_a_users_choice():
    """The flow runs pipeline.max_parallel stage processes at once: each must take GPU memory as it needs it, not
    nearly all of it. TensorFlow reads TF_FORCE_GPU_ALLOW_GROWTH when it first sets up a device: every stage module
    sets it on import (stages.common.cli applies the environment defaults), and none sets up a device on import."""
    modules = sorted({command_module(stage["cmd"]) for stage in stage_definitions().values()})
    env = {k: v for k, v in os.environ.items() if k != "TF_FORCE_GPU_ALLOW_GROWTH"} | {"PYTHONPATH": str(REPO)}
    probe = subprocess.run(
        [sys.executable, "-c", GROWTH_PROBE, *modules], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.splitlines()[-1])
    assert seen == {"unset": dict.fromkeys(modules, "true"), "false": dict.fromkeys(modules, "false")}
    assert len(modules) > 20 and "stages.dogscats.features" in modules and "stages.text.train" in modules
