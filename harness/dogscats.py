"""The Dogs vs Cats prepare stage on as many photos as the release holds: generated photos packed as the release
lays them out, and the stage's peak memory and wall time. tests/test_canonical_layouts.py bounds the peak,
benchmarks/dogscats_prepare_memory.py records it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from stages.dogscats.paths import ARCHIVE, PREPARED

TINTS = {"Cat": (190, 80, 60), "Dog": (60, 90, 190)}  # cats reddish, dogs bluish


def write_many_photos_zip(
    path: Path, n_per_class: int, distinct: int = 400, seed: int = 0, sides: tuple[int, int] = (140, 260)
) -> dict[str, int]:
    """Write a zip of PetImages/{Cat,Dog}/0.jpg.. with n_per_class JPEGs per class, each side drawn from
    [sides[0], sides[1]) pixels, cycling through `distinct` generated ones (encoding 25,000 would dominate a test).
    Returns the archive's bytes and the bytes all its photos take decoded as RGB (at the default sides about 120 KB
    each, 2.4 KB as JPEG)."""
    rng = np.random.default_rng(seed)
    pool: dict[str, list[tuple[bytes, int]]] = {}
    for label, tint in TINTS.items():
        pool[label] = []
        for _ in range(distinct):
            width, height = (int(v) for v in rng.integers(*sides, size=2))
            # a smooth gradient with a little noise: a few KB as JPEG, like a photo's size once decoded
            ramp = np.linspace(0, 60, width)[None, :, None] + np.linspace(0, 40, height)[:, None, None]
            pixels = np.asarray(tint)[None, None, :] + ramp + rng.normal(0, 3, size=(height, width, 3))
            buffer = io.BytesIO()
            Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(buffer, format="JPEG", quality=75)
            pool[label].append((buffer.getvalue(), width * height * 3))
    decoded = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not compress
        for label, photos in pool.items():
            for i in range(n_per_class):
                data, rgb_bytes = photos[i % distinct]
                zf.writestr(f"PetImages/{label}/{i}.jpg", data)
                decoded += rgb_bytes
    return {"archive_bytes": path.stat().st_size, "decoded_bytes": decoded}


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
