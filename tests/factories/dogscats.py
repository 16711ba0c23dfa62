"""Generated pet photos and archives laid out like kagglecatsanddogs_5340.zip (PetImages/<class>/<photo>)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# what a Windows Thumbs.db starts with (an OLE compound file): not an image
THUMBS_DB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600


def jpeg(color, size=(24, 20), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def png(color, size=(24, 20), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_jpeg(seed: int, tint, size=(36, 36)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(tint, 40, size=(size[1], size[0], 3)), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


TINTS = {"Cat": (190, 80, 60), "Dog": (60, 90, 190)}  # cats reddish, dogs bluish


def pet_folder(root: Path, n_per_class: int = 8, extra: dict[str, bytes] | None = None) -> Path:
    """root/PetImages/{Cat,Dog}/<i>.jpg plus `extra` files (path under PetImages -> bytes), laid out as in the pet
    photo archive."""
    raw = root / "PetImages"
    for label, tint in TINTS.items():
        (raw / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            (raw / label / f"{i}.jpg").write_bytes(noisy_jpeg(i + 100 * len(label), tint))
    for rel, data in (extra or {}).items():
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(data)
    return raw


def zipped(raw: Path, reverse: bool = False, root_files: dict[str, bytes] | None = None) -> bytes:
    """The folder `raw` (and what it holds) as a zip, members in sorted (or reverse) path order; `root_files`
    (name -> bytes) are added at the archive's root, next to the folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for f in sorted(raw.rglob("*"), reverse=reverse):
            zf.write(f, f.relative_to(raw.parent).as_posix())
        for name, data in (root_files or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


# kagglecatsanddogs_5340.zip's oddities (../shared/canonical-sources.md), path under PetImages -> bytes
RELEASE_ODDITIES = {
    "Cat/Thumbs.db": THUMBS_DB,
    "Dog/Thumbs.db": THUMBS_DB,
    "Cat/666.jpg": b"",
    "Dog/11702.jpg": b"",  # the release's two zero-byte files
    "Cat/cmyk.jpg": jpeg((0, 255, 255, 0), mode="CMYK"),
    "Dog/grey.jpg": jpeg(90, mode="L"),
    "Dog/png_named.jpg": png((60, 90, 190)),  # a PNG with a .jpg name
}
# the files the release holds at the archive root, next to PetImages/
RELEASE_ROOT_FILES = {
    "readme[1].txt": b"Dogs vs. Cats images, Microsoft Research\r\n",
    "CDLA-Permissive-2.0.pdf": b"%PDF-1.5\n% Community Data License Agreement\n%%EOF\n",
}


def release_pet_archive(root: Path, n_per_class: int = 8) -> bytes:
    """A zip laid out as kagglecatsanddogs_5340.zip: n_per_class photos per class and every oddity of the release
    (RELEASE_ODDITIES under PetImages/, RELEASE_ROOT_FILES at the root); `root` is a scratch folder."""
    return zipped(pet_folder(root, n_per_class, extra=RELEASE_ODDITIES), root_files=RELEASE_ROOT_FILES)


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
