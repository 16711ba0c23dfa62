"""Thread pools of stages that share the cores, on the real data: each stage alone, then two at once (as the flow
runs them with `pipeline.max_parallel: 2`), first with TensorFlow's default pools (every process sized to all the
cores) and then with each stage's pools sized to its share of the cores (harness/threads.py's THREAD_VARIABLES).

    LESSON5_MIRROR=../shared/data python -m benchmarks.threads [--stages A B] [--set KEY=VALUE ...] [--keep]

The stages' commands run directly in a throwaway copy of the project whose upstream stages `dvc repro` made first
(not timed); budgets are cut with --set so that each stage takes a minute or two (same code, fewer epochs or
images). Figures: orchestration.threads.<stages>.<pools>.{alone_sum_s,together_s,together_cores_busy}.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import yaml

from benchmarks.common import ProjectCopy, benchmark_command, record_result, require_mirror
from harness.threads import thread_pool_env
from pipelines.dvc_runner import DvcRunner, StageInfo

# The default pair: two of the default run's longest stages, which the flow runs side by side
DEFAULT_STAGES = ["text_train@char_lstm", "imdb_train@multi_cnn"]
DEFAULT_SETTINGS = [
    "text.models.char_lstm.epochs=2",
    "text.models.char_lstm.lr_schedule=[[0, 0.004]]",
    "imdb.models.multi_cnn.phases=[{epochs: 1, learning_rate: 0.001}]",
]


def run_stages(
    runner: DvcRunner, stages: list[StageInfo], env: dict[str, str]
) -> tuple[dict[str, float], float, float]:
    """The stages' commands started together, each as the flow runs it (`DvcRunner.run_command`); (each one's wall
    seconds, the wall until all ended, their CPU seconds)."""
    started = time.perf_counter()

    def run(info: StageInfo) -> tuple[float, float]:
        code, tail, cpu_seconds, _ = runner.run_command(info, env, lambda line: None)
        if code != 0:
            raise SystemExit(f"{info.name} failed:\n{tail}")
        return time.perf_counter() - started, cpu_seconds

    with ThreadPoolExecutor(len(stages)) as pool:
        ended = dict(zip((info.name for info in stages), pool.map(run, stages), strict=True))
    walls = {name: wall for name, (wall, _) in ended.items()}
    return walls, time.perf_counter() - started, sum(cpu for _, cpu in ended.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs=2, default=DEFAULT_STAGES, metavar="STAGE", help="two stages to time")
    parser.add_argument(
        "--set", nargs="*", default=DEFAULT_SETTINGS, metavar="KEY=VALUE", help="params.yaml overrides (YAML values)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the project copy")
    args = parser.parse_args(argv)
    require_mirror()
    command = benchmark_command("benchmarks.threads", argv)
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    project = ProjectCopy(params=overrides)
    try:
        with contextlib.chdir(project.root):  # the runner names stages relative to the working folder
            runner = DvcRunner(".")
            stages = runner.stages(args.stages)
        upstream = sorted({u for name in args.stages for u in stages[name].upstream})
        print(f"preparing {', '.join(upstream)} (not timed)", flush=True)
        project.dvc("repro", *upstream)
        chosen = [stages[name] for name in args.stages]
        pair = "_".join(re.sub(r"\W", "_", name) for name in args.stages)
        cores = os.cpu_count() or 1
        results = {}
        for pools, env in (("default", {}), ("shared", thread_pool_env(cores, len(chosen)))):
            run_env = {**project.env, **env}
            alone = {info.name: run_stages(runner, [info], run_env)[1] for info in chosen}
            walls, together, cpu = run_stages(runner, chosen, run_env)
            results[pools] = together
            print(
                f"{pools} pools {env or '(TensorFlow, BLAS: one thread per core)'}: alone "
                + ", ".join(f"{n} {s:.1f} s" for n, s in alone.items())
                + f"; together {together:.1f} s ("
                + ", ".join(f"{n} {s:.1f} s" for n, s in walls.items())
                + f"), {cpu / together:.2f} of {cores} cores busy",
                flush=True,
            )
            base = f"orchestration.threads.{pair}.{pools}"
            setting = f"thread pools: {env or 'the libraries defaults'}; params: {'; '.join(args.set)}"
            record_result(
                "orchestration",
                f"{base}.alone_sum_s",
                round(sum(alone.values()), 1),
                description=f"{' and '.join(args.stages)} one after the other (the sum of their wall times)",
                unit="s",
                command=command,
                note=f"{setting}; each: " + ", ".join(f"{n} {s:.1f} s" for n, s in alone.items()),
            )
            record_result(
                "orchestration",
                f"{base}.together_s",
                round(together, 1),
                description=f"{' and '.join(args.stages)} started together: wall time until both ended",
                unit="s",
                command=command,
                note=f"{setting}; each: " + ", ".join(f"{n} {s:.1f} s" for n, s in walls.items()),
            )
            record_result(
                "orchestration",
                f"{base}.together_cores_busy",
                round(cpu / together, 2),
                description=f"{' and '.join(args.stages)} started together: their CPU seconds per wall second",
                unit="cores",
                command=command,
                note=setting,
            )
        record_result(
            "orchestration",
            f"orchestration.threads.{pair}.speedup",
            round(results["default"] / results["shared"], 3),
            description="wall time of the two stages together with the default pools over that with shared pools",
            unit="x",
            command=command,
        )
    finally:
        project.cleanup(keep=args.keep)


if __name__ == "__main__":
    main()
