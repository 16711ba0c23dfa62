"""A toy DVC project of shell stages (no TensorFlow, no data): what the DVC runner and the flow are held to."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.factories.repository import init_repository


def write_file_stage(
    path: str, *, sleep: float = 0.0, deps: tuple[str, ...] = (), record_times: bool = False, fail: str | None = None
) -> dict:
    """A stage whose command writes `path` (after `sleep` s); `record_times`: the file holds [start, end] wall-clock
    times; `fail`: the command prints this to stderr and exits 3 instead."""
    if fail is not None:
        script = f"import sys; sys.stderr.write({fail!r} + chr(10)); sys.exit(3)"
    else:
        script = (
            f"import json, pathlib, time; start = time.time(); time.sleep({sleep}); "
            f"pathlib.Path({path!r}).parent.mkdir(parents=True, exist_ok=True); "
            f"pathlib.Path({path!r}).write_text(json.dumps([start, time.time()]) if {record_times} else 'done')"
        )
    stage = {"cmd": f'python -c "{script}"', "outs": [path]}
    if deps:
        stage["deps"] = list(deps)
    return stage


def toy_project(
    root: Path, stages: dict[str, dict], max_parallel: int = 2, timeout_minutes: dict[str, float] | None = None
) -> Path:
    """A git + DVC repository at `root` with these stages, an input.txt for them to depend on (DVC keeps no
    run-cache entry for a stage without deps) and a params.yaml holding the flow's section."""
    timeouts = {"default": 60, **(timeout_minutes or {})}
    root.mkdir(parents=True, exist_ok=True)
    (root / "input.txt").write_text("the toy pipeline's input\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / "params.yaml").write_text(
        yaml.safe_dump({"pipeline": {"max_parallel": max_parallel, "download_retries": 0, "timeout_minutes": timeouts}})
    )
    init_repository(root)
    return root


CHAIN = {
    "first": write_file_stage("data/first.txt", deps=("input.txt",)),
    "second": write_file_stage("data/second.txt", deps=("data/first.txt",)),
    "third": write_file_stage("data/third.txt", deps=("data/second.txt",)),
    "apart": write_file_stage("data/apart.txt", deps=("input.txt",)),
}
