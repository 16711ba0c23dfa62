"""This machine's speed on each heavy kind of work, measured for a few seconds: what the run-time estimate scales by.

    python -m pipelines.calibrate [--kinds KIND ...] [--params params.yaml]

Prints one JSON object: {kind: units per second, "<kind>.note": what else its report says}. The kinds are the
workloads' own (`Workload.calibrations` in stages/<workload>/workload.py: each runs the workload's model at its
params' size, as its stage would) and `cpu`: million steps/s of a plain Python loop, the best of 5, the gauge of
every stage's fixed costs (start-up, imports, reading and writing), which run in one Python thread.
It runs in its own process (`calibrate`), so the flow never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from stages.common.params import load_params
from stages.common.workload import Calibration, registry

CPU = Calibration("Python", "M steps/s", lambda p: python_mops())


def python_mops(steps: int = 1_000_000, trials: int = 5) -> float:
    """The best of `trials` timings: a busy neighbour slows some of them, not the machine's own speed."""
    best = float("inf")
    for _ in range(trials):
        started = time.perf_counter()
        total = 0
        for i in range(steps):
            total += i & 7
        best = min(best, time.perf_counter() - started)
    return steps / best / 1e6


def calibrations() -> dict[str, tuple[str, Calibration]]:
    """{kind: (the workload that measures it, or "" for cpu, its calibration)}."""
    kinds = {"cpu": ("", CPU)}
    for workload in registry().values():
        kinds |= {kind: (workload.name, c) for kind, c in workload.calibrations.items()}
    return kinds


def measure(kinds: list[str], params_file: Path) -> dict:
    """{kind: rate, "<kind>.note": note} for `kinds`, at the sizes params_file gives."""
    known, rates = calibrations(), {}
    for kind in kinds:
        owner, calibration = known[kind]
        section = load_params(owner, registry()[owner].schema, params_file) if owner else None
        rates[kind] = calibration.measure(section)
        if note := calibration.note(section):
            rates[f"{kind}.note"] = note
    return rates


def calibrate(kinds: list[str], params_file: Path, env: dict[str, str] | None = None, timeout_s: float = 300) -> dict:
    """`measure` in a process of its own (TensorFlow stays out of the caller). Raises RuntimeError on failure."""
    command = [sys.executable, "-m", "pipelines.calibrate", "--params", str(params_file), "--kinds", *kinds]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"calibration failed ({' '.join(command[1:])}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", choices=sorted(calibrations()), default=sorted(calibrations()))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    from stages.common import environment

    environment.filter_native_noise()
    print(json.dumps(measure(args.kinds, args.params)))


if __name__ == "__main__":
    main()
