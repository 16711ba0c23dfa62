"""Peak memory of dogscats_prepare on as many photos as the release holds (25,000: 12,500 per class).

The photos are generated (small JPEGs of 140..259 pixels a side, ~3 GB once all decoded), packed as
kagglecatsanddogs_5340.zip lays them out, and the real `python -m stages.dogscats.prepare` runs on all of
them (dogscats.prepare.max_per_class: null) in a throwaway copy of the project. Its peak resident set size
(the kernel's ru_maxrss of that one process) and wall time are printed as a JSON record and appended to
benchmarks/results/dogscats_prepare_memory.json. No data download or mirror is needed.

    python -m benchmarks.dogscats_prepare_memory                    # 25,000 photos
    python -m benchmarks.dogscats_prepare_memory --per-class 1000   # a quick look
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, ProjectCopy
from stages.dogscats.paths import ARCHIVE, PREPARED
from tests.factories.dogscats import write_many_photos_zip

RESULTS = REPO / "benchmarks" / "results" / "dogscats_prepare_memory.json"
COMMAND = [sys.executable, "-m", "stages.dogscats.prepare"]


def run_measured(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run `command`; return (its peak RSS in MB, wall seconds). A failure raises with the command's output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        # wait4 gives this one child's usage; RUSAGE_CHILDREN would be the largest of every child this process
        # has waited for (e.g. an earlier `dvc repro` in the same test session)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if process.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n"
                               f"{log.read().decode(errors='replace')[-4000:]}")
    return usage.ru_maxrss / 1024, wall  # Linux reports kilobytes


def measure(project, per_class: int) -> dict:
    """Prepare 2 x per_class generated photos in `project` (a project copy with .root, .env and .set_params);
    return the figures and the stage's report."""
    archive = project.root / ARCHIVE
    archive.parent.mkdir(parents=True, exist_ok=True)
    generated = write_many_photos_zip(archive, per_class)
    project.set_params({"dogscats.prepare.max_per_class": None})
    peak_mb, wall_s = run_measured(COMMAND, project.root, project.env)
    report = json.loads((project.root / PREPARED / "report.json").read_text())
    return {"peak_rss_mb": round(peak_mb, 1), "wall_s": round(wall_s, 1), "photos": 2 * per_class,
            "archive_mb": round(generated["archive_bytes"] / 2**20, 1),
            "decoded_photos_mb": round(generated["decoded_bytes"] / 2**20), "report": report}


def git_state() -> dict[str, str | bool]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    # dirty: the measured code differs from the commit's (uncommitted changes to tracked files)
    return {"git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=12_500, help="photos per class (the release: 12,500)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    project = ProjectCopy()
    try:
        figures = measure(project, args.per_class)
    finally:
        project.cleanup()
    report = figures.pop("report")
    record = {"figure": "dogscats_prepare peak RSS", "value": figures.pop("peak_rss_mb"), "unit": "MB", **figures,
              "used": report["used"], "command": "python -m stages.dogscats.prepare (dogscats.prepare.max_per_class: "
              "null, generated archive)", **git_state(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()}
    print(json.dumps(record, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*records, record], indent=2) + "\n")
    print(f"appended to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
