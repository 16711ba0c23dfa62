"""The disk a profile run adds, as a user meets it: `make run PROFILE=full` where the default run has been.

    LESSON5_MIRROR=../shared/data python -m benchmarks.default_run --keep  # COPY: /tmp/lesson5-default-run-*/lesson5
    LESSON5_MIRROR=../shared/data python -m benchmarks.full_profile --in COPY [--set KEY=VALUE ...]

Runs the profile by `make run PROFILE=...` in COPY with the project's venv not activated (as the README's command
runs), then records the disk used by outputs, DVC cache and MLflow store (each file once, as the flow's summary
reports it) before and after. `--set` adds overrides on top of the profile and every record names them: the disk
a profile leaves does not depend on its epoch budgets (the models' shapes and the data set the sizes; an epoch adds
a line of history and a row per tracked metric), so `--set text.models.char_lstm.epochs=2` measures the full
profile's disk in about half its hour on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import yaml

from benchmarks.common import LoadSampler, benchmark_command, require_mirror, user_env
from benchmarks.default_run import record_disk
from pipelines.flow import disk_usage
from pipelines.profile import PROFILES, load_profile


def parse_set(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (a dotted params.yaml key), not {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="copy", required=True, metavar="COPY", help="a copy the default run left")
    parser.add_argument("--profile", default="full", help="profiles/<PROFILE>.yaml (default: full)")
    parser.add_argument("--set", dest="sets", type=parse_set, action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    mirror = require_mirror()
    copy = Path(args.copy).resolve()
    shown = [arg for key, value in args.sets for arg in ("--set", f"{key}={yaml.safe_dump(value).strip()}")]
    command = benchmark_command("benchmarks.full_profile", ["--in", "COPY", "--profile", args.profile, *shown])
    profile = load_profile(args.profile, copy)
    name = profile.name
    if args.sets:  # the profile and the extra overrides, as one profile file in the copy
        name = f"{profile.name}-bench"
        written = {
            "description": f"{profile.description} (--set {dict(args.sets)})",
            "overrides": {**profile.overrides, **dict(args.sets)},
        }
        (copy / PROFILES / f"{name}.yaml").write_text(yaml.safe_dump(written, sort_keys=False), encoding="utf-8")
    before = disk_usage(str(copy))
    started = time.perf_counter()
    try:
        with LoadSampler() as load, open(copy / f"profile-{name}.log", "w") as log:
            subprocess.run(
                ["make", "run", f"PROFILE={name}"], cwd=copy, env=user_env(mirror), stdout=log, stderr=log, check=True
            )
    finally:
        if args.sets:
            (copy / PROFILES / f"{name}.yaml").unlink()
    wall, after = time.perf_counter() - started, disk_usage(str(copy))
    changed = f" with --set {', '.join(f'{k}={v}' for k, v in args.sets)}" if args.sets else ""
    notes = {
        area: f"the profile{changed}; {mb - before[area]:+,.0f} MB on the copy's {before[area]:,.0f} MB before it; "
        f"the profile ran {wall / 60:.1f} min ({load.describe()})"
        for area, mb in after.items()
    }
    record_disk(
        f"{args.profile}_profile", f"the default run and then `make run PROFILE={args.profile}`", after, command, notes
    )


if __name__ == "__main__":
    main()
