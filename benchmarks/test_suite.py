"""The test suite's wall time on this machine, as `make test` (the full suite, what CI runs) and `make check` run it.

    python -m benchmarks.test_suite [--tiers full check]

Each tier runs in its own pytest process with the Makefile's workers (one per core and one more), one after the
other (no other job beside them: run it on a quiet machine). The full tier also refreshes tests/durations.json
(`--store-durations`), the order the next run starts its slow tests in. Recorded: wall time, CPU seconds (user +
system of pytest and everything it started), the load average before the run and the machine's speed then: the CPU
seconds of `import keras` in a new process, which every stage process pays (on this VM it moved between about 4 and
10 s from hour to hour, and the suite's time with it), and the share of the machine's CPU time busy during the run
(every process's: near 100 %, the run is bound by CPU and more workers cannot shorten it). The full tier also
records where its CPU time went: the share of each kind of process (stage commands, pytest's own workers, dvc
commands, flows, Prefect), read every half second from every process started during the run, the killed ones and
the detached Prefect server included.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import NamedTuple

import psutil

from benchmarks.common import REPO, benchmark_command, record_result
from harness.suite import SHARED_SERVER_CPU

TIERS = {
    "full": (["--store-durations"], "`make test`: the full suite, as CI runs it", "<= 8 min (goal)"),
    "check": (["-m", "not slow"], "`make check`'s tests (not marked slow)", "<= 2 min (goal)"),
}


# The kinds of process a census counts, each by what its command line holds (the first that matches; else "other")
KIND_NAMES = {
    "stages": "stage commands (`python -m stages...`)",
    "flows": "Prefect flows (`python -m pipelines.flow`)",
    "pytest": "pytest and its workers (the in-process tests)",
    "dvc": "dvc commands",
    "prefect": "Prefect servers, workers and served deployments",
    "other": "other processes (git, servers of MLflow and PostgreSQL, helpers)",
}
PROCESS_KINDS = {
    "stages": re.compile(r" -m stages\."),
    "flows": re.compile(r" -m pipelines\.flow"),
    "pytest": re.compile(r" -m pytest|exec\(eval\(sys\.stdin"),  # pytest and its xdist workers: in-process tests
    "dvc": re.compile(r"/dvc |/dvc/__main__\.py| -m dvc "),
    "prefect": re.compile(r"prefect| -m pipelines\.serve"),  # the shared server, workers, served deployments
}


def process_kind(command_line: str) -> str:
    return next((kind for kind, pattern in PROCESS_KINDS.items() if pattern.search(command_line)), "other")


class ProcessCensus(threading.Thread):
    """The CPU seconds of every process started while it runs, read every half second and summed by `process_kind`:
    a process that ends between two readings counts with its last one, one shorter than that may be missed."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopped = threading.Event()
        # by pid and start time (a pid can be reused); not by start time alone, which psutil rounds to the boot second
        self.before = {(proc.pid, proc.info["create_time"]) for proc in psutil.process_iter(["create_time"])}
        self.seen: dict[tuple[int, float], tuple[str, float]] = {}  # (kind, CPU s) of each process started since

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            for proc in psutil.process_iter(["create_time"]):
                key = (proc.pid, proc.info["create_time"])
                if key in self.before:
                    continue
                try:
                    kind = self.seen[key][0] if key in self.seen else process_kind(" ".join(proc.cmdline()))
                    used = proc.cpu_times()
                except psutil.Error:  # ended meanwhile
                    continue
                self.seen[key] = (kind, used.user + used.system)

    def stop(self) -> tuple[Counter, Counter]:
        """({kind: CPU s}, {kind: processes})."""
        self.stopped.set()
        self.join()
        cpu, count = Counter(), Counter()
        for kind, seconds in self.seen.values():
            cpu[kind] += seconds
            count[kind] += 1
        return cpu, count


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


def busy_share(before, after) -> float | None:
    """The share of the machine's CPU time busy between two `psutil.cpu_times()` readings (every process's, the
    kernel's included); None when no time passed."""

    def idle_and_total(times) -> tuple[float, float]:  # guest time is counted in user time already (Linux)
        guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
        return times.idle + getattr(times, "iowait", 0.0), sum(times) - guest

    (idle_before, total_before), (idle_after, total_after) = idle_and_total(before), idle_and_total(after)
    total = total_after - total_before
    return (total - (idle_after - idle_before)) / total if total > 0 else None


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


class TierRun(NamedTuple):
    wall_s: float
    cpu_s: float  # pytest's and every process it started (the shared Prefect server included)
    passed: int
    workers: int  # pytest-xdist's workers (the Makefile's TEST_WORKERS)
    load_before: tuple[float, ...]
    keras_cpu_s: float  # `import keras` before the run: the machine's speed then
    machine_busy: float | None  # the share of the machine's CPU time busy during the run, every process's
    census: tuple[Counter, Counter] | None  # the full tier's ({kind: CPU s}, {kind: processes})


def run_tier(tier: str) -> TierRun:
    """One tier, timed; fails when a test fails."""
    args, _, _ = TIERS[tier]
    load_before = os.getloadavg()
    keras_s = import_keras_cpu_s()
    census = ProcessCensus() if tier == "full" else None
    n_workers = workers()
    before, machine_before = children_cpu_s(), psutil.cpu_times()
    started = time.perf_counter()
    if census:
        census.start()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", str(n_workers), *args], cwd=REPO, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    machine_busy = busy_share(machine_before, psutil.cpu_times())
    counted = census.stop() if census else None
    cpu = children_cpu_s() - before + shared_server_cpu_s(result.stdout)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0:
        raise SystemExit(f"{tier} tier failed ({result.returncode}): {summary}\n{result.stdout[-3000:]}")
    print(result.stdout[result.stdout.find("slowest 15") - 30 :])
    passed = int(summary.split(" passed")[0].split()[-1])
    return TierRun(wall, cpu, passed, n_workers, load_before, keras_s, machine_busy, counted)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiers", nargs="+", choices=list(TIERS), default=list(TIERS))
    args = parser.parse_args(argv)
    command = benchmark_command("benchmarks.test_suite", argv)
    # every tier first, then the records: a record written between tiers would fail the next tier's docs test
    measured = {tier: run_tier(tier) for tier in args.tiers}
    cores = os.cpu_count()
    for tier, run in measured.items():
        _, what, goal = TIERS[tier]
        print(f"{tier}: {run.passed} tests in {run.wall_s:.0f} s, {run.cpu_s:.0f} CPU s")
        loads = " / ".join(f"{x:.2f}" for x in run.load_before)
        note = (
            f"{run.passed} tests, {run.workers} workers on {cores} cores; load before: {loads}; "
            f"`import keras` before: {run.keras_cpu_s:.1f} CPU s (the machine's speed then)"
        )
        record_result(
            "tests",
            f"tests.{tier}.wall_s",
            round(run.wall_s),
            description=f"{what}, wall time (the load before it is in the note)",
            unit="s",
            fastai=goal,
            command=command,
            note=note,
        )
        record_result(
            "tests",
            f"tests.{tier}.cpu_s",
            round(run.cpu_s),
            description=f"{what}, CPU seconds of pytest and every process it started",
            unit="s",
            command=command,
            note=f"{run.cpu_s / run.wall_s:.2f} of {cores} cores on average",
        )
        if run.machine_busy is not None:
            print(f"  the machine's CPU busy meanwhile: {100 * run.machine_busy:.0f} %")
            record_result(
                "tests",
                f"tests.{tier}.machine_busy",
                round(100 * run.machine_busy, 1),
                description=f"{what}, the share of the machine's CPU time busy during the run (every process's, "
                "the kernel's included)",
                unit="%",
                command=command,
                note=f"{cores} cores; near 100 % the run is bound by CPU, and more workers cannot shorten it",
            )
        if run.census:
            record_census(tier, *run.census, run.cpu_s, command)


def record_census(tier: str, cpu: Counter, count: Counter, tier_cpu: float, command: str) -> None:
    total = sum(cpu.values())
    print(f"census: {total:.0f} CPU s seen (the tier's own count: {tier_cpu:.0f})")
    for kind in [*PROCESS_KINDS, "other"]:
        print(f"  {kind}: {count[kind]} processes, {cpu[kind]:.0f} CPU s ({100 * cpu[kind] / total:.0f} %)")
        record_result(
            "tests",
            f"tests.{tier}.cpu_share.{kind}",
            round(100 * cpu[kind] / total, 1),
            description=f"{TIERS[tier][1]}, the share of its CPU time in {KIND_NAMES[kind]} (its process census)",
            unit="%",
            command=command,
            note=f"{count[kind]} processes, {cpu[kind]:.0f} of the {total:.0f} CPU s the census saw "
            f"(the tier's own count: {tier_cpu:.0f})",
        )


if __name__ == "__main__":
    main()
