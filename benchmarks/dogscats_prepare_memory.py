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

from benchmarks.common import ProjectCopy, benchmark_command, record_result
from harness.dogscats import measure


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
