"""dogscats_prepare: list the photos in the archive, draw each class's sample (seeded, max_per_class photos, before
any photo is decoded), keep the decodable ones as RGB files, report every skip, split train/valid (stratified).

Its work: the archive's headers are read once (every file's, no photo's bytes); then only the drawn photos are read
and decoded, and those drawn to replace the unusable ones, so the time grows with max_per_class, not with the
archive (null: every photo)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stages.common.archive import read_members
from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, write_csv, write_json
from stages.dogscats import params as dogscats_params
from stages.dogscats.images import Loaded, Unusable, encoded_copy, load_rgb
from stages.dogscats.params import PrepareParams
from stages.dogscats.paths import ARCHIVE, PREPARED

ROOT = "PetImages"  # the archive's layout: PetImages/<class>/<photo>
OUTSIDE = f"not under {ROOT}/<class>/"  # the skip reason of every other file in the archive


def pet_photos(archive: Path, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    """(path under PetImages, bytes) of the `wanted` files (paths under PetImages), in archive order; no other
    file's bytes are read."""
    prefix = ROOT + "/"
    for name, blob in read_members(archive, lambda name: name.startswith(prefix) and name[len(prefix) :] in wanted):
        yield name[len(prefix) :], blob


@dataclass(frozen=True)
class Listing:
    classes: list[str]  # the folders under PetImages that hold files, sorted
    files: dict[str, list[str]]  # class -> its files' paths under PetImages, in the extracted folder's order
    outside: list[str]  # archive paths of the files not in PetImages/<class>/ (never read)


def list_files(archive: Path) -> Listing:
    """The archive's files from its headers alone (zip: the central directory); no file's bytes are read."""
    if not archive.is_file():
        raise StageError(f"{archive}: archive not found; run dogscats_download first")
    photos, outside = [], []

    def listed(name: str) -> bool:  # called once per regular file; reads nothing
        parts = name.split("/")
        (photos if len(parts) > 2 and parts[0] == ROOT else outside).append(name)
        return False

    for _ in read_members(archive, listed):
        pass
    twice = [name for name, n in Counter(photos).items() if n > 1]
    if twice:
        raise StageError(f"{archive}: {twice[0]} appears twice in the archive; download it again")
    sources = [name[len(ROOT) + 1 :] for name in photos]
    classes = class_folders(archive, sources)
    # sorted by path components, as the extracted folder's paths were: the same draw from the same photos
    files = {c: sorted((s for s in sources if s.startswith(c + "/")), key=path_order) for c in classes}
    return Listing(classes, files, sorted(outside, key=path_order))


def path_order(path: str) -> list[str]:
    return path.split("/")


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


def draw_order(files: dict[str, list[str]], seed: int) -> dict[str, list[str]]:
    """Each class's files in a seeded random order, the classes drawing in turn from one generator: the sample is
    taken from the front."""
    rng = np.random.default_rng(seed)
    return {name: [paths[i] for i in rng.permutation(len(paths))] for name, paths in files.items()}


def take_usable(
    archive: Path,
    order: dict[str, list[str]],
    max_per_class: int | None,
    max_pixels: int,
    keep: Callable[[str, bytes, Loaded], None],
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Decode each class's files in their drawn `order` until max_per_class of them are usable (null: all) or the
    class has no more: (each class's usable files in drawn order, why each unusable file read was skipped).
    `keep(source, bytes, loaded)` stores a usable photo as soon as it is decoded: no photo stays in memory. The
    first round reads the first max_per_class files of each class; another reads replacements for the unusable ones
    only when there were some."""
    kept: dict[str, list[str]] = {name: [] for name in order}
    skipped: dict[str, str] = {}
    drawn = dict.fromkeys(order, 0)  # files of each class taken from the order so far
    while True:
        round_ = {}
        for name, paths in order.items():
            need = len(paths) if max_per_class is None else max_per_class - len(kept[name])
            round_[name] = paths[drawn[name] : drawn[name] + need]
            drawn[name] += len(round_[name])
        wanted = {source for sources in round_.values() for source in sources}
        if not wanted:
            return kept, skipped
        usable = set()
        for source, blob in tqdm(
            pet_photos(archive, wanted), total=len(wanted), desc="read", unit="img", mininterval=2.0
        ):
            try:
                loaded = load_rgb(blob, max_pixels)
            except Unusable as reason:
                skipped[source] = str(reason)
                continue
            keep(source, blob, loaded)
            usable.add(source)
        for name, sources in round_.items():
            kept[name] += [source for source in sources if source in usable]


def _kind(skip: dict[str, str]) -> str:
    return skip["reason"].split(":")[0]


def prepare(archive: Path, out_dir: Path, p: PrepareParams):
    """Pure step: write the used photos of the archive as RGB files under out_dir/images; return (manifest, report)."""
    listing = list_files(archive)
    converted, paths = Counter(), {}

    def keep(source: str, blob: bytes, loaded: Loaded) -> None:
        data, suffix = encoded_copy(blob, loaded)
        if suffix == ".png":
            converted[f"{loaded.original_format} {loaded.original_mode}"] += 1
        rel = Path("images") / (str(Path(source).with_suffix("")).replace("/", "__") + suffix)
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_bytes(data)
        paths[source] = str(rel)

    kept, unusable = take_usable(archive, draw_order(listing.files, p.seed), p.max_per_class, p.max_pixels, keep)
    skipped = [{"file": source, "reason": unusable[source]} for source in sorted(unusable, key=path_order)]
    for name in listing.classes:
        if not kept[name]:
            reasons = Counter(_kind(s) for s in skipped if s["file"].startswith(name + "/"))
            raise StageError(
                f"{archive}: {ROOT}/{name}: no usable images in this class folder ({len(listing.files[name])} files; "
                f"skipped: {dict(reasons)}). Each class needs decodable images; check the download."
            )
    skipped += [{"file": name, "reason": OUTSIDE} for name in listing.outside]
    manifest = split(kept, listing.classes, p.valid_fraction)
    manifest.insert(0, "path", manifest["source"].map(paths))
    files = sum(len(f) for f in listing.files.values())
    report = {
        "classes": listing.classes,
        "scanned": files + len(listing.outside),  # every file's header
        "read": len(paths) + len(unusable),  # the files decoded: the drawn photos and their replacements
        "not_read": files - len(paths) - len(unusable),
        "files_per_class": {name: len(listing.files[name]) for name in listing.classes},
        "usable": len(paths),  # of those read
        "short_of_max_per_class": {
            name: len(kept[name]) for name in listing.classes if p.max_per_class and len(kept[name]) < p.max_per_class
        },
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


def split(kept: dict[str, list[str]], classes: list[str], valid_fraction: float) -> pd.DataFrame:
    """Per class, its photos in drawn order: the first valid_fraction of them (at least one) for validation."""
    parts = []
    for label, name in enumerate(classes):
        photos = kept[name]
        n_valid = max(1, round(len(photos) * valid_fraction))
        if n_valid >= len(photos):
            raise StageError(
                f"class '{name}' has only {len(photos)} usable image(s): too few for a "
                f"train/valid split with valid_fraction={valid_fraction}"
            )
        parts.append(
            pd.DataFrame({"source": photos, "label": label, "class": name}).assign(
                split=["valid"] * n_valid + ["train"] * (len(photos) - n_valid)
            )
        )
    return pd.concat(parts).sort_values(["split", "label", "source"]).reset_index(drop=True)


def main() -> None:
    p = dogscats_params.load()
    with atomic_dir(PREPARED) as out:
        manifest, report = prepare(Path(ARCHIVE), out, p.prepare)
        write_csv(out / "manifest.csv", manifest)
        write_json(out / "report.json", report)
    used, files = report["used"], f"{report['scanned']:,} files in the archive"
    if report["not_read"]:
        files += f", {report['not_read']:,} beyond max_per_class={p.prepare.max_per_class} not read"
    print(
        f"{report['usable']:,} usable images of {report['read']:,} read ({files}); skipped {report['skipped']} "
        f"{report['skipped_by_reason']}; converted to RGB {report['converted_to_rgb']}; "
        f"using train {used['train']} / valid {used['valid']}"
    )
    for name, n in report["short_of_max_per_class"].items():
        print(
            f"dogscats_prepare: {name} has only {n:,} usable photos, fewer than max_per_class="
            f"{p.prepare.max_per_class}: all of them are used"
        )


if __name__ == "__main__":
    run_stage(main)
