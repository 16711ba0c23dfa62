"""How long the stages will take on this machine, before they run.

Each stage takes `fixed + units / (rate * efficiency)` seconds of a slot:
  units       the work its params ask for (photos through VGG16, characters or reviews times epochs; `stage_work`)
  rate        this machine's speed on that kind of work, measured now for a few seconds (pipelines/calibrate.py)
  efficiency  the stage's own throughput over the calibrated rate, and `fixed` its seconds besides the work
              (start-up, loading, evaluation), both fitted from a recorded run (`python -m benchmarks.estimate`)
`fixed` scales with the plain-Python gauge (kind cpu); Keras stages without a kind of their own (the MovieLens
models, the Dogs vs Cats heads) scale with the IMDB CNN's rate. The run's wall time is the flow's own schedule
simulated: at most `max_parallel` stages at once, the one heading the longest remaining path first (`simulate`).
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REFERENCE = Path("benchmarks/results/orchestration.json")  # the records `python -m benchmarks.estimate` fits
UNKNOWN_STAGE_S = 30.0  # a stage no reference run holds: about a stage process's start-up and a small step
# Sizes when the data is not prepared yet (the mirror's files; the canonical ones differ by under 1%)
NIETZSCHE_CHARS, CHARS_PER_WORD = 600_901, 5.5
IMDB_TRAIN_REVIEWS = 25_000
MOVIELENS_RATINGS = {"ml-latest-small": 100_836, "ml-100k": 100_000, "ml-1m": 1_000_209, "ml-25m": 25_000_095}
PHOTOS_PER_CLASS = {"mirror": 4000, "release": 12_500}
PROPOSE_QUICK_S = 2 * 3600  # a default run estimated longer than this proposes the quick profile first


@dataclass(frozen=True)
class Work:
    kind: str  # a pipelines.calibrate kind: vgg, lstm or cnn
    units: float  # images, characters, reviews or ratings, in all epochs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _epochs(model: Mapping) -> int:
    return sum(phase["epochs"] for phase in model["phases"]) if "phases" in model else model.get("epochs", 1)


def photos_per_class(params: Mapping, root: Path) -> float:
    """The photos a class will use: at most max_per_class (null: all) of the photos a class the archive holds, as
    the last prepare counted them, else as the mirror or the release holds them."""
    cap = params["dogscats"]["prepare"]["max_per_class"]
    files = (_read_json(root / "data/dogscats/prepared/report.json") or {}).get("files_per_class") or {}
    source = PHOTOS_PER_CLASS["mirror" if os.environ.get("LESSON5_MIRROR") else "release"]
    available = sum(files.values()) / len(files) if files else source
    return min(cap, available) if cap else available


def stage_work(stage: str, params: Mapping, root: Path) -> Work | None:
    """The work a stage's params ask for, in units of its kind's calibrated rate; None: a stage of fixed cost."""
    name, _, item = stage.partition("@")
    if name.startswith("dogscats_"):
        d = params["dogscats"]
        photos = 2 * photos_per_class(params, root)
        train_photos = photos * (1 - d["prepare"]["valid_fraction"])
        if name == "dogscats_features":
            return Work("vgg", photos * (2 if d["features"]["flips"] else 1))
        if name == "dogscats_finetune" and d["finetune"]["enabled"]:
            return Work("vgg", d["finetune"]["epochs"] * train_photos)
        if name == "dogscats_train":
            epochs = sum(d["train"][head]["epochs"] for head in ("dense", "bn_inserted", "bn_scratch"))
            return Work("cnn", epochs * train_photos * (2 if d["train"]["flips"] else 1))
    if name == "text_train":
        t = params["text"]
        chars = _read_json(root / "data/text/prepared/stats.json") or {}
        train_chars = chars.get("n_train_chars") or NIETZSCHE_CHARS * (1 - t["prepare"]["valid_fraction"])
        model = t["models"][item]
        per_epoch = train_chars
        if model["kind"] == "word_lstm":
            per_epoch = chars.get("n_train_words") or train_chars / CHARS_PER_WORD
        return Work("lstm", model["epochs"] * per_epoch)
    if name == "imdb_train":  # the Keras models; imdb_nbsvm_train is a stage of fixed cost, as every stage not here
        imdb = params["imdb"]
        model = imdb["models"][item]
        return Work("cnn", _epochs(model) * IMDB_TRAIN_REVIEWS * (1 - imdb["tokenize"]["valid_fraction"]))
    if name == "movielens_train":
        m = params["movielens"]
        ratings = MOVIELENS_RATINGS.get(m["dataset"], MOVIELENS_RATINGS["ml-latest-small"])
        return Work("cnn", m["models"][item]["epochs"] * ratings * (1 - m["prepare"]["valid_fraction"]))
    return None


@dataclass(frozen=True)
class Reference:
    """A recorded run's fit: per stage its fixed seconds and efficiency, and the rates calibrated at that run."""

    fixed_s: dict[str, float]
    efficiency: dict[str, float]
    rates: dict[str, float]

    @classmethod
    def load(cls, path: Path) -> Reference:
        records = _read_json(path) or []
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
    names = {
        "vgg": ("VGG16", "images/s"),
        "lstm": ("char LSTM", "chars/s"),
        "cnn": ("IMDB CNN", "reviews/s"),
        "cpu": ("Python", "M steps/s"),
    }
    parts = []
    for kind, (name, unit) in names.items():
        if kind in rates:
            policy = f" {rates['precision']}" if kind == "vgg" and "precision" in rates else ""
            parts.append(f"{name}{policy} {rates[kind]:,.1f} {unit}")
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
