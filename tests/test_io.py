"""Atomic writes: a failed or disk-full write leaves the previous output intact and says what happened.

Disk full is real: the writing process runs with RLIMIT_FSIZE (each file may hold only a few KiB), so the
operating system refuses the write exactly as a full disk would (EFBIG instead of ENOSPC)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.common.io import (
    atomic_dir,
    atomic_path,
    load_npy,
    read_json,
    save_figure,
    save_npy,
    write_csv,
    write_json,
    write_parquet,
)
from tests.conftest import REPO
from tests.factories.movielens import movielens_zip, ratings_table

LIMIT = 4096  # bytes per file


def limited_file_size():
    """preexec_fn: every file this process writes may hold at most LIMIT bytes (a full disk, per file)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def run_limited(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited_file_size,
    )


def test_atomic_path_failure_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"version": 2, "trunc')
            raise RuntimeError("killed half-way")
    assert read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_failure_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "prepared"
    with atomic_dir(target) as out:
        (out / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as out:
            (out / "a.txt").write_text("v2")
            raise RuntimeError("killed half-way")
    assert (target / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_disk_full_during_each_writer_is_a_clear_error_and_keeps_previous_outputs(tmp_path):
    import keras
    import matplotlib.pyplot as plt

    small = {
        "json": tmp_path / "m.json",
        "csv": tmp_path / "t.csv",
        "parquet": tmp_path / "t.parquet",
        "npy": tmp_path / "a.npy",
        "keras": tmp_path / "model.keras",
        "png": tmp_path / "fig.png",
    }
    write_json(small["json"], {"version": 1})
    write_csv(small["csv"], pd.DataFrame({"v": [1]}))
    write_parquet(small["parquet"], pd.DataFrame({"v": [1]}))
    save_npy(small["npy"], np.arange(3))
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(small["keras"])
    fig = plt.figure(figsize=(1, 1))
    save_figure(small["png"], fig)
    plt.close(fig)
    before = {name: path.read_bytes() for name, path in small.items()}

    result = run_limited(
        f"""
        import json, numpy as np, pandas as pd
        from stages.common import io
        from stages.common.io import DiskFullError
        big = pd.DataFrame({{"x": np.random.default_rng(0).random(20_000)}})
        writers = {{
            "json": lambda p: io.write_json(p, {{"values": big["x"].tolist()}}),
            "csv": lambda p: io.write_csv(p, big),
            "parquet": lambda p: io.write_parquet(p, big),
            "npy": lambda p: io.save_npy(p, big["x"].to_numpy()),
            "keras": None,
            "png": None,
        }}
        def keras_writer(p):
            import keras
            model = keras.Sequential([keras.Input((200,)), keras.layers.Dense(200)])
            io.save_keras(p, model)
        def figure_writer(p):
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(8, 8))
            ax.scatter(*np.random.default_rng(0).random((2, 5000)))
            io.save_figure(p, fig)
        writers["keras"], writers["png"] = keras_writer, figure_writer
        paths = {json.dumps({n: str(p) for n, p in small.items()})}
        report = {{}}
        for name, write in writers.items():
            try:
                write(paths[name])
                report[name] = "no error"
            except DiskFullError as err:
                report[name] = "DiskFullError: " + str(err)
            except Exception as err:
                report[name] = f"{{type(err).__name__}}: {{err}}"
        print("REPORT" + json.dumps(report))
    """,
        cwd=tmp_path,
    )
    report = json.loads(result.stdout.split("REPORT", 1)[1]) if "REPORT" in result.stdout else result.stderr
    for name, path in small.items():
        assert report[name].startswith(f"DiskFullError: [Errno 28] no space left while writing {path}"), report[name]
        assert "previous version, if any, is unchanged" in report[name]
        assert path.read_bytes() == before[name], f"{name}: previous output changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in small.values())  # no temp files


@pytest.mark.slow
def test_disk_full_in_a_real_stage_keeps_its_previous_output(tmp_path):
    """movielens_prepare run for real with a full disk: exit 1, one clear line, the earlier output untouched."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    raw = tmp_path / "data" / "movielens" / "raw"
    raw.mkdir(parents=True)
    (raw / "x.zip").write_bytes(movielens_zip(ratings_table(n_users=200, per_user=40)))
    shutil.unpack_archive(raw / "x.zip", raw)
    (raw / "x.zip").unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stage = [sys.executable, "-m", "stages.movielens.prepare"]
    subprocess.run(stage, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    prepared = tmp_path / "data" / "movielens" / "prepared"
    before = {p.name: p.read_bytes() for p in prepared.iterdir()}
    assert (prepared / "ratings.parquet").stat().st_size > LIMIT

    params = (
        (tmp_path / "params.yaml").read_text().replace("seed: 42\n    valid_fraction", "seed: 7\n    valid_fraction")
    )
    (tmp_path / "params.yaml").write_text(params)  # the rerun would write a different split
    result = run_limited("import runpy; runpy.run_module('stages.movielens.prepare', run_name='__main__')", tmp_path)
    assert result.returncode == 1
    assert "error: [Errno 28] no space left while writing data/movielens/prepared" in result.stderr
    assert "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == before
    assert sorted(p.name for p in prepared.parent.iterdir()) == ["prepared", "raw"]  # no temp folder left


def test_load_npy_round_trip_and_memory_map(tmp_path):
    save_npy(tmp_path / "a.npy", np.arange(10, dtype="int32"))
    assert load_npy(tmp_path / "a.npy").tolist() == list(range(10))
    assert isinstance(load_npy(tmp_path / "a.npy", mmap=True), np.memmap)


def tiny_model(x: np.ndarray):
    """Built and trained alike every time (fixed names and seed), with one dtype policy shared by two layers: Keras'
    config numbers a shared object by its memory address, which differs from build to build as from process to
    process."""
    import keras

    keras.utils.set_random_seed(0)
    policy = keras.DTypePolicy("float32")
    model = keras.Sequential(
        [
            keras.Input((3,), name="x"),
            keras.layers.Dense(4, "relu", dtype=policy, name="hidden"),
            keras.layers.Dense(1, dtype=policy, name="out"),
        ],
        name="tiny",
    )
    model.compile(keras.optimizers.Adam(0.01, name="adam"), "mse")
    model.fit(x, x.sum(axis=1), epochs=1, verbose=0)  # the optimizer's state is saved too
    return model


def test_save_keras_writes_the_same_bytes_for_the_same_model_and_it_loads_back(tmp_path):
    """A .keras file as Keras writes it carries the time of saving; then every forced rerun of a train stage would
    change its model file and DVC would rerun all that reads it."""
    from stages.common.io import load_keras, save_keras

    x = np.random.default_rng(0).random((16, 3)).astype("float32")
    model = tiny_model(x)
    save_keras(tmp_path / "a.keras", model)
    time.sleep(1.01 - time.time() % 1)  # into the next second: Keras' date_saved (and any HDF5 object time) differs
    save_keras(tmp_path / "b.keras", model)
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()

    loaded = load_keras(tmp_path / "a.keras")  # safe_mode
    for got, want in zip(
        loaded.weights + loaded.optimizer.variables, model.weights + model.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.keras", "b.keras"]  # no temporary file left


def test_save_keras_writes_the_same_bytes_for_models_built_alike(tmp_path):
    from stages.common.io import load_keras, save_keras

    x = np.random.default_rng(0).random((16, 3)).astype("float32")
    model = tiny_model(x)
    save_keras(tmp_path / "a.keras", model)
    save_keras(tmp_path / "b.keras", tiny_model(x))
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    np.testing.assert_array_equal(load_keras(tmp_path / "a.keras").predict(x, verbose=0), model.predict(x, verbose=0))


def test_write_metrics_puts_timings_apart_from_the_metrics_later_stages_read(tmp_path):
    from stages.common.io import write_metrics

    metrics, timings = tmp_path / "data/w/metrics/train_m.json", tmp_path / "data/w/timings/train_m.json"
    write_metrics(
        metrics,
        timings,
        {
            "best_val_mse": 0.8,
            "train_ratings_per_s": 1e4,
            "train_seconds": 2.5,
            "heads": {"dense": {"val_accuracy": 0.9, "seconds": 1.5}, "bn": {"val_accuracy": 0.8}},
        },
    )
    assert read_json(metrics) == {
        "best_val_mse": 0.8,
        "heads": {"dense": {"val_accuracy": 0.9}, "bn": {"val_accuracy": 0.8}},
    }
    written = read_json(timings)
    load = written.pop("loadavg")
    assert written == {"train_ratings_per_s": 1e4, "train_seconds": 2.5, "heads": {"dense": {"seconds": 1.5}}}
    assert len(load) == 3 and all(x >= 0 for x in load)  # the machine's load, with every timing
