"""The test suite's wall time on this machine, as `make test` (the full suite, what CI runs) and `make check` run it.

    python -m benchmarks.test_suite [--tiers full check]

Each tier runs in its own pytest process with the Makefile's workers (one per core and one more), one after the
other (no other job beside them: run it on a quiet machine). The full tier also refreshes tests/durations.json
(`--store-durations`), the order the next run starts its slow tests in. Recorded: wall time, CPU seconds (user +
system of pytest and everything it started), the load average before the run and the machine's speed then: the CPU
seconds of `import keras` in a new process, which every stage process pays (on this VM it moved between about 4 and
10 s from hour to hour, and the suite's time with it).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time

from benchmarks.common import REPO, benchmark_command, record_result

# the line tests/conftest.py ends a run with: the CPU seconds of the test run's Prefect server, which no process
# waits for (started detached by a worker, stopped by pytest's controller), so getrusage leaves them out
SHARED_SERVER_CPU = "the run's shared Prefect server used"
TIERS = {
    "full": (["--store-durations"], "`make test`: the full suite, as CI runs it", "<= 8 min (goal)"),
    "check": (["-m", "not slow"], "`make check`'s tests (not marked slow)", "<= 2 min (goal)"),
}


def workers() -> int:
    """The Makefile's TEST_WORKERS (one per core and one more), read from the Makefile itself."""
    shown = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval=show-workers: ; @echo $(TEST_WORKERS)", "show-workers"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(shown.stdout)


def children_cpu_s() -> float:
    """User + system CPU seconds of every process this one has started and waited for, so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_keras_cpu_s() -> float:
    """CPU seconds of `import keras` in a new process, the median of three runs."""
    seconds = []
    for _ in range(3):
        before = children_cpu_s()
        subprocess.run([sys.executable, "-c", "import keras"], cwd=REPO, capture_output=True, check=True)
        seconds.append(children_cpu_s() - before)
    return sorted(seconds)[1]


def shared_server_cpu_s(output: str) -> float:
    """The CPU seconds of the run's shared Prefect server, from pytest's output (0 when no test started it)."""
    found = re.search(re.escape(SHARED_SERVER_CPU) + r" ([0-9.]+) CPU s", output)
    return float(found.group(1)) if found else 0.0


def run_tier(tier: str) -> tuple[float, float, int, tuple[float, ...], float]:
    """(wall s, CPU s, tests passed, load before, `import keras` CPU s before) of one tier; fails when a test
    fails."""
    args, _, _ = TIERS[tier]
    load_before = os.getloadavg()
    keras_s = import_keras_cpu_s()
    before = children_cpu_s()
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", str(workers()), *args], cwd=REPO, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    cpu = children_cpu_s() - before + shared_server_cpu_s(result.stdout)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0:
        raise SystemExit(f"{tier} tier failed ({result.returncode}): {summary}\n{result.stdout[-3000:]}")
    print(result.stdout[result.stdout.find("slowest 15") - 30 :])
    passed = int(summary.split(" passed")[0].split()[-1])
    return wall, cpu, passed, load_before, keras_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiers", nargs="+", choices=list(TIERS), default=list(TIERS))
    args = parser.parse_args(argv)
    command = benchmark_command("benchmarks.test_suite", argv)
    # every tier first, then the records: a record written between tiers would fail the next tier's docs test
    measured = {tier: run_tier(tier) for tier in args.tiers}
    for tier, (wall, cpu, passed, load, keras_s) in measured.items():
        _, what, goal = TIERS[tier]
        print(f"{tier}: {passed} tests in {wall:.0f} s, {cpu:.0f} CPU s ({cpu / wall:.2f} cores busy)")
        loads = " / ".join(f"{x:.2f}" for x in load)
        note = (
            f"{passed} tests, {workers()} workers on {os.cpu_count()} cores; load before: {loads}; "
            f"`import keras` before: {keras_s:.1f} CPU s (the machine's speed then)"
        )
        record_result(
            "tests",
            f"tests.{tier}.wall_s",
            round(wall),
            description=f"{what}, wall time (the load before it is in the note)",
            unit="s",
            fastai=goal,
            command=command,
            note=note,
        )
        record_result(
            "tests",
            f"tests.{tier}.cpu_s",
            round(cpu),
            description=f"{what}, CPU seconds of pytest and every process it started",
            unit="s",
            command=command,
            note=f"{cpu / wall:.2f} of {os.cpu_count()} cores busy on average",
        )


if __name__ == "__main__":
    main()
