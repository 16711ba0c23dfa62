"""Reading pet photos defensively: every file's bytes are either a usable RGB image or a counted, named skip."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError


class Unusable(Exception):
    """The file is not a usable image; the message is the reason recorded in the report."""


@dataclass(frozen=True)
class Loaded:
    image: Image.Image  # RGB, fully decoded
    original_mode: str
    original_format: str | None


def load_rgb(data: bytes, max_pixels: int) -> Loaded:
    """Decode a file's bytes fully and return the image as RGB; raise Unusable(reason) for anything else."""
    if not data:
        raise Unusable("empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                # the header is read first: refuse huge images before their pixels are decompressed
                width, height = img.size
                if width * height > max_pixels:
                    raise Unusable(f"decompression bomb: {width}x{height} pixels is over max_pixels={max_pixels}")
                img.load()
                return Loaded(to_rgb(img), img.mode, img.format)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise Unusable(f"decompression bomb: {err}") from None
        except UnidentifiedImageError:
            raise Unusable("not an image (unknown format)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise Unusable(f"corrupt image data: {err}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Greyscale, palette, CMYK and alpha images as RGB; transparent pixels become white."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def encoded_copy(data: bytes, loaded: Loaded) -> tuple[bytes, str]:
    """(bytes, suffix) to store: an RGB JPEG's own bytes `data`, else a lossless RGB PNG."""
    if loaded.original_format == "JPEG" and loaded.original_mode == "RGB":
        return data, ".jpg"
    buffer = io.BytesIO()
    loaded.image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), ".png"
