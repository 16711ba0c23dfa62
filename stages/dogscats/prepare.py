"""dogscats_prepare: read the photos from the archive, keep the decodable ones as RGB files, report every skip,
split train/valid (seeded, stratified)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stages.common.archive import read_members
from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, write_csv, write_json
from stages.dogscats import params as dogscats_params
from stages.dogscats.images import Unusable, encoded_copy, load_rgb
from stages.dogscats.params import PrepareParams
from stages.dogscats.paths import ARCHIVE, PREPARED

ROOT = "PetImages"  # the archive's layout: PetImages/<class>/<photo>
OUTSIDE = f"not under {ROOT}/<class>/"  # the skip reason of every other file in the archive


def pet_photos(
    archive: Path, wanted: set[str] | None = None, outside: list[str] | None = None
) -> Iterator[tuple[str, bytes]]:
    """(path under PetImages, bytes) of the archive's files in PetImages/<class>/: all, or the `wanted` ones.

    `outside`: collects the archive paths of the other files (the release's readme and licence at the root),
    which are never read.
    """

    def selected(name: str) -> bool:  # called once per regular file, in archive order
        parts = name.split("/")
        if len(parts) > 2 and parts[0] == ROOT:
            return wanted is None or name[len(ROOT) + 1 :] in wanted
        if outside is not None:
            outside.append(name)
        return False

    for name, blob in read_members(archive, selected):
        yield name[len(ROOT) + 1 :], blob


def class_folders(archive: Path, sources) -> list[str]:
    """The class names: the folders under PetImages that hold files, sorted; exactly two."""
    classes = sorted({source.split("/")[0] for source in sources})
    if len(classes) != 2:
        raise StageError(
            f"{archive}: expected 2 class folders with files in {ROOT}/ (Cat, Dog), found "
            f"{len(classes)}: {', '.join(classes) or 'none'} (the archive layout must be "
            f"{ROOT}/<class>/*.jpg; re-run dogscats_download, or check dogscats.sources.images)"
        )
    return classes


def scan(archive: Path, max_pixels: int) -> tuple[pd.DataFrame, list[dict[str, str]], list[str]]:
    """Decode every photo once while streaming the archive, keeping no bytes:
    (usable images with their labels, skipped files with reasons, class names).

    A skipped file is named by its path under PetImages/, or, when it lies outside PetImages/<class>/, by its
    path in the archive (its reason says so).
    """
    if not archive.is_file():
        raise StageError(f"{archive}: archive not found; run dogscats_download first")
    checked: dict[str, str | None] = {}  # path under PetImages -> None if usable, else why not
    outside: list[str] = []
    for source, blob in tqdm(
        pet_photos(archive, outside=outside), desc=f"check {archive.name}", unit="img", mininterval=2.0
    ):
        if source in checked:
            raise StageError(f"{archive}: {ROOT}/{source} appears twice in the archive; download it again")
        try:
            load_rgb(blob, max_pixels)
            checked[source] = None
        except Unusable as reason:
            checked[source] = str(reason)
    rows, skipped = [], []
    classes = class_folders(archive, checked)
    for label, name in enumerate(classes):
        # sorted by path components, as the extracted folder's paths were: the same split from the same photos
        files = sorted((s for s in checked if s.startswith(name + "/")), key=lambda s: s.split("/"))
        for source in files:
            if checked[source] is None:
                rows.append({"source": source, "label": label, "class": name})
            else:
                skipped.append({"file": source, "reason": checked[source]})
        if all(checked[source] is not None for source in files):
            reasons = Counter(_kind(s) for s in skipped if s["file"].startswith(name + "/"))
            raise StageError(
                f"{archive}: {ROOT}/{name}: no usable images in this class folder ({len(files)} files; "
                f"skipped: {dict(reasons)}). Each class needs decodable images; check the download."
            )
    skipped += [{"file": name, "reason": OUTSIDE} for name in sorted(outside, key=lambda s: s.split("/"))]
    return pd.DataFrame(rows), skipped, classes


def _kind(skip: dict[str, str]) -> str:
    return skip["reason"].split(":")[0]


def prepare(archive: Path, out_dir: Path, p: PrepareParams):
    """Pure step: write the used photos of the archive as RGB files under out_dir/images; return (manifest, report)."""
    usable, skipped, classes = scan(archive, p.max_pixels)
    manifest = split(usable, p.valid_fraction, p.max_per_class, p.seed)
    wanted, converted, paths = set(manifest["source"]), Counter(), {}
    # a second pass reads only the chosen photos: the full archive's 25,000 JPEGs are never all in memory
    for source, blob in tqdm(pet_photos(archive, wanted), total=len(wanted), desc="write", unit="img", mininterval=2.0):
        loaded = load_rgb(blob, p.max_pixels)
        data, suffix = encoded_copy(blob, loaded)
        if suffix == ".png":
            converted[f"{loaded.original_format} {loaded.original_mode}"] += 1
        rel = Path("images") / (str(Path(source).with_suffix("")).replace("/", "__") + suffix)
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_bytes(data)
        paths[source] = str(rel)
    manifest.insert(0, "path", manifest["source"].map(paths))
    report = {
        "classes": classes,
        "scanned": len(usable) + len(skipped),
        "usable": len(usable),
        "skipped": len(skipped),
        "skipped_by_reason": dict(Counter(_kind(s) for s in skipped)),
        "converted_to_rgb": dict(converted),
        "used": {
            split: {c: int(n) for c, n in manifest[manifest["split"] == split]["class"].value_counts().items()}
            for split in ("train", "valid")
        },
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
            raise StageError(
                f"class '{group['class'].iloc[0]}' has only {len(group)} usable image(s): too few for a "
                f"train/valid split with valid_fraction={valid_fraction}"
            )
        parts.append(group.assign(split=["valid"] * n_valid + ["train"] * (len(group) - n_valid)))
    return pd.concat(parts).sort_values(["split", "label", "source"]).reset_index(drop=True)


def main() -> None:
    p = dogscats_params.load()
    with atomic_dir(PREPARED) as out:
        manifest, report = prepare(Path(ARCHIVE), out, p.prepare)
        write_csv(out / "manifest.csv", manifest)
        write_json(out / "report.json", report)
    used = report["used"]
    print(
        f"{report['usable']:,} usable images of {report['scanned']:,} scanned; skipped {report['skipped']} "
        f"{report['skipped_by_reason']}; converted to RGB {report['converted_to_rgb']}; "
        f"using train {used['train']} / valid {used['valid']}"
    )


if __name__ == "__main__":
    run_stage(main)
