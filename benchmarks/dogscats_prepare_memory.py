"""Peak memory of dogscats_prepare on as many photos as the release holds (25,000: 12,500 per class).

The photos are generated (small JPEGs of 140..259 pixels a side, ~3 GB once all decoded), packed as
kagglecatsanddogs_5340.zip lays them out, and the real `python -m stages.dogscats.prepare` runs on all of
them (dogscats.prepare.max_per_class: null) in a throwaway copy of the project. Its peak resident set size
(the kernel's ru_maxrss of that one process) and wall time are printed as JSON and recorded in
benchmarks/results/dogscats.json (dogscats.prepare_<N>_photos.peak_rss and .wall_s). No data download or mirror
is needed.

    python -m benchmarks.dogscats_prepare_memory                    # 25,000 photos
    python -m benchmarks.dogscats_prepare_memory --per-class 1000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ProjectCopy, benchmark_command, record_result
from stages.dogscats.paths import ARCHIVE, PREPARED
from tests.factories.dogscats import write_many_photos_zip

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
            raise RuntimeError(
                f"{' '.join(command)} failed ({process.returncode}):\n{log.read().decode(errors='replace')[-4000:]}"
            )
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
    return {
        "peak_rss_mb": round(peak_mb, 1),
        "wall_s": round(wall_s, 1),
        "photos": 2 * per_class,
        "archive_mb": round(generated["archive_bytes"] / 2**20, 1),
        "decoded_photos_mb": round(generated["decoded_bytes"] / 2**20),
        "report": report,
    }


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
    print(json.dumps({**figures, "used": report["used"]}, indent=2))
    photos = figures["photos"]
    note = (
        f"{photos:,} generated photos (archive {figures['archive_mb']} MB, {figures['decoded_photos_mb']:,} MB "
        "once decoded), used: "
        + "; ".join(
            f"{split} " + ", ".join(f"{n:,} {c}" for c, n in used.items()) for split, used in report["used"].items()
        )
        + f"; load {load_before[0]:.2f} at the start; the stage ran with dogscats.prepare.max_per_class: null"
    )
    command = benchmark_command("benchmarks.dogscats_prepare_memory", argv)
    stage = "`python -m stages.dogscats.prepare`"
    for figure, description, value, unit, bound in (
        (
            "peak_rss",
            f"peak RSS of {stage} on {photos:,} generated photos",
            figures["peak_rss_mb"],
            "MB",
            "< 2 GB (the test's bound)",
        ),
        ("wall_s", f"wall time of {stage} on {photos:,} generated photos", figures["wall_s"], "s", None),
    ):
        record_result(
            "dogscats",
            f"dogscats.prepare_{photos}_photos.{figure}",
            value,
            description=description,
            unit=unit,
            fastai=bound,
            command=command,
            note=note,
        )
    print("recorded in benchmarks/results/dogscats.json")


if __name__ == "__main__":
    main()
