"""`make gpu-check` (benchmarks/gpu_check.py) on a machine without a GPU: it says so and fails, unless --allow-cpu,
which trains one pass of each kind of work through the stages' own code at the tiny size and records each throughput
(into a temporary results folder: the committed records stay as they are)."""

from __future__ import annotations

import json

import pytest

from benchmarks import common, gpu_check


@pytest.fixture(autouse=True)
def no_gpu():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: there `make gpu-check` itself is the check")


def committed_results() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in common.RESULTS_DIR.iterdir()}


def test_without_a_gpu_it_says_so_and_fails_and_records_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        gpu_check.main(["--results-dir", str(tmp_path)])
    assert "TensorFlow sees no GPU" in refused.value.code and "--allow-cpu" in refused.value.code  # exit status 1
    out = capsys.readouterr().out
    assert "devices TensorFlow sees: /physical_device:CPU:0" in out and "TF_FORCE_GPU_ALLOW_GROWTH=true" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_with_allow_cpu_it_trains_each_kind_of_work_and_records_its_throughput(tmp_path, capsys):
    before = committed_results()
    rates = gpu_check.main(["--allow-cpu", "--results-dir", str(tmp_path)])
    assert committed_results() == before
    records = {r["figure"]: r for r in json.loads((tmp_path / "gpu.json").read_text())}
    expected = {f"gpu.cpu_tiny.{work}.{unit}_per_s": work for work, (unit, _) in gpu_check.WORKS.items()}
    assert set(records) == set(expected)
    out = capsys.readouterr().out
    for figure, work in expected.items():
        record = records[figure]
        assert common.check_record(record) == [] and record["workload"] == "gpu"
        assert record["value"] == round(rates[work], 1) > 0 and f"{work:<16}" in out
        assert record["command"] == f"python -m benchmarks.gpu_check --allow-cpu --results-dir {tmp_path}"
        assert record["note"].startswith(f"device CPU: {common.machine()['cpu']}; dtype policy float32; tiny size")
