"""dogscats_prepare: keep the decodable images as RGB files, report every skip, split train/valid (seeded, stratified)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, write_csv, write_json
from stages.dogscats import params as dogscats_params
from stages.dogscats.images import Unusable, encoded_copy, load_rgb
from stages.dogscats.params import PrepareParams

RAW_DIR = "data/dogscats/raw/PetImages"
OUT_DIR = "data/dogscats/prepared"


def class_folders(raw_dir: Path) -> list[Path]:
    if not raw_dir.is_dir():
        raise StageError(f"{raw_dir}: folder not found; run dogscats_download first (or check the archive layout: "
                         "PetImages/<class>/*.jpg)")
    folders = sorted(p for p in raw_dir.iterdir() if p.is_dir())
    if len(folders) != 2:
        raise StageError(f"{raw_dir}: expected 2 class folders (Cat, Dog), found {len(folders)}: "
                         f"{', '.join(p.name for p in folders) or 'none'}")
    return folders


def scan(raw_dir: Path, max_pixels: int) -> tuple[pd.DataFrame, list[dict[str, str]], list[str]]:
    """Decode every file once: (usable images with their labels, skipped files with reasons, class names)."""
    rows, skipped = [], []
    folders = class_folders(raw_dir)
    for label, folder in enumerate(folders):
        files = sorted(f for f in folder.rglob("*") if f.is_file())
        usable = 0
        for path in tqdm(files, desc=f"check {folder.name}", unit="img", mininterval=2.0):
            source = str(path.relative_to(raw_dir))
            try:
                load_rgb(path, max_pixels)
            except Unusable as reason:
                skipped.append({"file": source, "reason": str(reason)})
                continue
            rows.append({"source": source, "label": label, "class": folder.name})
            usable += 1
        if usable == 0:
            reasons = Counter(_kind(s) for s in skipped if s["file"].startswith(folder.name + "/"))
            raise StageError(f"{folder}: no usable images in this class folder ({len(files)} files"
                             + (f"; skipped: {dict(reasons)}" if reasons else "")
                             + "). Each class needs decodable images; check the download.")
    return pd.DataFrame(rows), skipped, [f.name for f in folders]


def _kind(skip: dict[str, str]) -> str:
    return skip["reason"].split(":")[0]


def prepare(raw_dir: Path, out_dir: Path, p: PrepareParams):
    """Pure step: write the used images as RGB files under out_dir/images; return (manifest, report)."""
    usable, skipped, classes = scan(raw_dir, p.max_pixels)
    manifest = split(usable, p.valid_fraction, p.max_per_class, p.seed)
    converted, paths = Counter(), []
    for source in manifest["source"]:
        loaded = load_rgb(raw_dir / source, p.max_pixels)
        data, suffix = encoded_copy(raw_dir / source, loaded)
        if suffix == ".png":
            converted[f"{loaded.original_format} {loaded.original_mode}"] += 1
        rel = Path("images") / (str(Path(source).with_suffix("")).replace("/", "__") + suffix)
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_bytes(data)
        paths.append(str(rel))
    manifest.insert(0, "path", paths)
    report = {
        "classes": classes,
        "scanned": len(usable) + len(skipped),
        "usable": len(usable),
        "skipped": len(skipped),
        "skipped_by_reason": dict(Counter(_kind(s) for s in skipped)),
        "converted_to_rgb": dict(converted),
        "used": {split: {c: int(n) for c, n in manifest[manifest["split"] == split]["class"].value_counts().items()}
                 for split in ("train", "valid")},
        "skipped_files": skipped,
    }
    return manifest, report


def split(images: pd.DataFrame, valid_fraction: float, max_per_class: int | None, seed: int) -> pd.DataFrame:
    """Per class: a seeded shuffle, the first max_per_class kept, valid_fraction of those for validation."""
    rng = np.random.default_rng(seed)
    parts = []
    for _, group in images.groupby("label", sort=True):
        group = group.iloc[rng.permutation(len(group))][:max_per_class]
        n_valid = max(1, round(len(group) * valid_fraction))
        if n_valid >= len(group):
            raise StageError(f"class '{group['class'].iloc[0]}' has only {len(group)} usable image(s): too few for a "
                             f"train/valid split with valid_fraction={valid_fraction}")
        parts.append(group.assign(split=["valid"] * n_valid + ["train"] * (len(group) - n_valid)))
    return pd.concat(parts).sort_values(["split", "label", "source"]).reset_index(drop=True)


def main() -> None:
    p = dogscats_params.load()
    with atomic_dir(OUT_DIR) as out:
        manifest, report = prepare(Path(RAW_DIR), out, p.prepare)
        write_csv(out / "manifest.csv", manifest)
        write_json(out / "report.json", report)
    used = report["used"]
    print(f"{report['usable']:,} usable images of {report['scanned']:,} scanned; skipped {report['skipped']} "
          f"{report['skipped_by_reason']}; converted to RGB {report['converted_to_rgb']}; "
          f"using train {used['train']} / valid {used['valid']}")


if __name__ == "__main__":
    run_stage(main)
