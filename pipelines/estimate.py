"""How long the stages will take on this machine, before they run.

Each stage takes `fixed + units / (rate * efficiency)` seconds of a slot:
  units       the work its params ask for (photos through VGG16, characters or reviews times epochs), as its
              workload declares it (`Workload.work` in stages/<workload>/workload.py)
  rate        this machine's speed on that kind of work, measured now for a few seconds (pipelines/calibrate.py)
  efficiency  the stage's own throughput over the calibrated rate, and `fixed` its seconds besides the work
              (start-up, loading, evaluation), both fitted from a recorded run (`python -m benchmarks.estimate`)
`fixed` scales with the plain-Python gauge (kind cpu). The run's wall time is the flow's own schedule simulated: at
most `max_parallel` stages at once, the one heading the longest remaining path first (`simulate`).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.workload import Work, read_if_there, registry, workload_of

REFERENCE = Path("benchmarks/results/orchestration.json")  # the records `python -m benchmarks.estimate` fits
UNKNOWN_STAGE_S = 30.0  # a stage no reference run holds: about a stage process's start-up and a small step
PROPOSE_QUICK_S = 2 * 3600  # a default run estimated longer than this proposes the quick profile first


def stage_work(stage: str, params: Mapping, root: Path) -> Work | None:
    """The work a stage's params ask for, as its workload declares it; None: a stage of fixed cost."""
    owner = registry().get(workload_of(stage))
    return owner.work(stage, params, root) if owner else None


@dataclass(frozen=True)
class Reference:
    """A recorded run's fit: per stage its fixed seconds and efficiency, and the rates calibrated at that run."""

    fixed_s: dict[str, float]
    efficiency: dict[str, float]
    rates: dict[str, float]

    @classmethod
    def load(cls, path: Path) -> Reference:
        records = read_if_there(path) or []
        values = {r["figure"]: r["value"] for r in records if r["figure"].startswith("orchestration.estimate.")}

        def part(prefix: str) -> dict[str, float]:
            return {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix)}

        fixed, efficiency = part("orchestration.estimate.fixed_s."), part("orchestration.estimate.efficiency.")
        return cls(fixed, efficiency, part("orchestration.estimate.calibration."))


def kinds_needed(stages: list[str], params: Mapping, root: Path) -> list[str]:
    """The calibration kinds these stages' estimates need: cpu always (it scales every fixed cost)."""
    kinds = {w.kind for s in stages if (w := stage_work(s, params, root))}
    return ["cpu", *sorted(kinds - {"cpu"})]


def stage_seconds(
    stages: list[str], params: Mapping, root: Path, rates: Mapping[str, float], reference: Reference
) -> dict[str, float]:
    """Each stage's estimated seconds of a slot on the machine `rates` were measured on."""
    speed = reference.rates.get("cpu", rates["cpu"]) / rates["cpu"]
    seconds = {}
    for stage in stages:
        fixed = reference.fixed_s.get(stage, UNKNOWN_STAGE_S) * speed
        work = stage_work(stage, params, root)
        efficiency = reference.efficiency.get(stage)
        if work and efficiency and rates.get(work.kind):
            fixed += work.units / (rates[work.kind] * efficiency)
        seconds[stage] = fixed
    return seconds


def remaining_path(upstream: Mapping[str, tuple[str, ...]], seconds: Mapping[str, float]) -> dict[str, float]:
    """For each stage, its seconds plus the longest chain of stages downstream of it: the flow's priority."""
    downstream: dict[str, list[str]] = {s: [] for s in upstream}
    for stage, ups in upstream.items():
        for up in ups:
            if up in downstream:
                downstream[up].append(stage)
    path: dict[str, float] = {}

    def walk(stage: str) -> float:
        if stage not in path:
            path[stage] = seconds.get(stage, 0.0) + max((walk(d) for d in downstream[stage]), default=0.0)
        return path[stage]

    for stage in upstream:
        walk(stage)
    return path


def simulate(
    upstream: Mapping[str, tuple[str, ...]],
    seconds: Mapping[str, float],
    slots: int,
    done: frozenset[str] = frozenset(),
    elapsed: Mapping[str, float] | None = None,
) -> float:
    """Wall seconds for the stages not in `done`, run as the flow runs them: a stage starts once its upstream is
    done, at most `slots` at once, the longest remaining path first. `elapsed`: stages already running, and for how
    long (they keep their slots)."""
    elapsed = elapsed or {}
    priority = remaining_path(upstream, seconds)
    todo = {s for s in upstream if s not in done}
    finished = set(done) | (set(upstream) - todo)
    running = [(max(seconds.get(s, 0.0) - t, 0.0), s) for s, t in elapsed.items() if s in todo]
    heapq.heapify(running)
    waiting = todo - {s for _, s in running}
    now = 0.0
    while waiting or running:
        ready = sorted(
            (s for s in waiting if all(u in finished or u not in upstream for u in upstream[s])),
            key=lambda s: -priority[s],
        )
        for stage in ready[: max(slots - len(running), 0)]:
            waiting.discard(stage)
            heapq.heappush(running, (now + seconds.get(stage, 0.0), stage))
        if not running:  # nothing can start: a stage waits on one outside this run
            break
        now, stage = heapq.heappop(running)
        finished.add(stage)
    return now


def by_workload(seconds: Mapping[str, float]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for stage, s in seconds.items():
        workload = stage.split("_", 1)[0]
        totals[workload] = totals.get(workload, 0.0) + s
    return totals


def minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def describe_rates(rates: Mapping[str, Any]) -> str:
    from pipelines.calibrate import calibrations

    parts = []
    for kind, (_, calibration) in calibrations().items():
        if kind in rates:
            note = f" {rates[f'{kind}.note']}" if f"{kind}.note" in rates else ""
            parts.append(f"{calibration.label}{note} {rates[kind]:,.1f} {calibration.unit}")
    return ", ".join(parts)


def report(seconds: Mapping[str, float], wall: float, slots: int, rates: Mapping[str, Any]) -> str:
    lines = [f"estimate for this machine (calibrated: {describe_rates(rates)}):"]
    lines += [f"  {workload:<10} {minutes(s):>8} of stage time" for workload, s in sorted(by_workload(seconds).items())]
    lines.append(f"  in all     {minutes(wall):>8} with {slots} stage(s) at a time ({len(seconds)} stages to run)")
    return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    seconds: dict[str, float]  # each stage's estimate (empty: no estimate)
    wall: float  # the run's, simulated
    rates: dict[str, Any]  # what the calibration measured
    text: str  # the report to print


def plan(
    upstream: Mapping[str, tuple[str, ...]],
    params: Mapping,
    params_file: Path,
    root: Path,
    slots: int,
    env: Mapping[str, str] | None = None,
) -> Plan | None:
    """The stages' estimate on this machine, measured now. None with LESSON5_ESTIMATE=0; a plan without seconds
    (its text says why) when the measurement failed: the run goes on without an estimate."""
    if os.environ.get("LESSON5_ESTIMATE") == "0":
        return None
    from pipelines.calibrate import calibrate

    names = list(upstream)
    try:
        rates = calibrate(kinds_needed(names, params, root), params_file, dict(env) if env else None)
    except (RuntimeError, OSError, ValueError) as err:
        return Plan({}, 0.0, {}, f"no estimate: {err}")
    seconds = stage_seconds(names, params, root, rates, Reference.load(root / REFERENCE))
    wall = simulate(upstream, seconds, slots)
    text = report(seconds, wall, slots, rates)
    if wall > PROPOSE_QUICK_S:
        text += "\n  over two hours here: `make run PROFILE=quick` runs every stage at small size first (a smoke run)"
    return Plan(seconds, wall, rates, text)
