"""The process census `python -m benchmarks.test_suite` takes of the full suite (docs/architecture.md quotes it)."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from benchmarks.test_suite import KIND_NAMES, PROCESS_KINDS, ProcessCensus, busy_share, process_kind


@pytest.mark.parametrize(
    "command_line, kind",
    [
        ("python -m stages.movielens.train dot", "stages"),
        ("/bin/sh -c python -m stages.imdb.evaluate cnn", "stages"),  # the shell dvc starts a stage's cmd in
        ("/repo/.venv/bin/python -m pipelines.flow movielens_analyze", "flows"),
        ("/repo/.venv/bin/python -u -c import sys;exec(eval(sys.stdin.readline()))", "pytest"),
        ("/repo/.venv/bin/python -m pytest -q -n 3 --store-durations", "pytest"),
        ("/repo/.venv/bin/python /repo/.venv/bin/dvc repro movielens_train@dot", "dvc"),
        ("/repo/.venv/bin/python -m dvc status --json", "dvc"),
        ("/repo/.venv/bin/python -m prefect server start --host 127.0.0.1", "prefect"),
        ("/repo/.venv/bin/python /repo/.venv/bin/prefect worker start --pool nightly", "prefect"),
        ("/repo/.venv/bin/python -m pipelines.serve", "prefect"),
        ("git init --quiet", "other"),
    ],
)
def test_each_process_is_counted_as_its_kind(command_line, kind):
    assert process_kind(command_line) == kind


def test_the_census_counts_the_cpu_of_processes_started_while_it_runs():
    census = ProcessCensus()
    census.start()
    burn = "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end: pass"
    burner = subprocess.Popen([sys.executable, "-c", burn])
    assert burner.wait() == 0
    cpu, count = census.stop()  # every process the machine started meanwhile: other tests' too
    ((kind, seconds),) = [seen for (pid, _), seen in census.seen.items() if pid == burner.pid]
    assert kind == "other" and 1.0 <= seconds <= 2.0  # its last reading is at most half a second old
    assert count["other"] >= 1 and cpu["other"] >= seconds


def test_every_kind_has_a_name_for_its_records():
    assert set(KIND_NAMES) == {*PROCESS_KINDS, "other"}


def test_the_machine_counts_as_busy_while_a_process_burns_cpu():
    before = psutil.cpu_times()
    burn = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    after = psutil.cpu_times()
    total = sum(after) - sum(before)
    busy = total - (after.idle + after.iowait) + (before.idle + before.iowait)
    assert busy >= 0.8  # the burner's second of CPU, at least (other tests' on top)
    assert busy_share(before, after) == pytest.approx(busy / total) and 0 < busy / total <= 1
    assert busy_share(before, before) is None
