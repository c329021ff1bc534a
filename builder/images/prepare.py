"""Turn stored image bytes into what an engine can take, or a precise failure reason.

The dataset keeps the original bytes; the engine gets a normalized copy: EXIF orientation
applied, first frame of animations, any mode (CMYK, 16-bit, palette, alpha) converted to RGB,
downscaled to a pixel budget, encoded as JPEG. A pixel limit checked before decoding guards
against decompression bombs.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageOps, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit, before decoding, per call


class ImageProblem(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class Prepared:
    data: bytes  # JPEG for the engine
    width: int  # original size, after EXIF rotation
    height: int
    ext: str | None = None  # the original's real format ('jpg', 'png', ...), read from its header


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits by the actual range instead of clipping
        lo, hi = img.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    elif img.mode == "F":
        img = img.convert("L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def _upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """The size after EXIF rotation: orientations 5-8 swap width and height."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def prepare_image(data: bytes | None, max_pixels: int, limit_pixels: int, quality: int = 90,
                  budget: Callable[[int], AbstractContextManager] | None = None) -> Prepared:
    """Normalize for the engine. Raises ImageProblem with its failure reason (missing, empty, decode, too_large).

    `budget(pixels)`, when given, is held around the decode (see `builder.images.pool`): the header
    is read first, so the pixels of a decode are known before any memory is spent on them.
    """
    if data is None:
        raise ImageProblem("missing", "no image bytes")
    if len(data) == 0:
        raise ImageProblem("empty", "zero-byte image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            pixels = img.width * img.height
            if pixels > limit_pixels:
                raise ImageProblem("too_large", f"{img.width}x{img.height} is over the limit of {limit_pixels} pixels")
            img.seek(0)
            orientation = img.getexif().get(0x0112, 1)
            width, height = _upright_size(img.width, img.height, orientation)
            as_is = img.format == "JPEG" and img.mode == "RGB" and orientation == 1 and pixels <= max_pixels
            with budget(pixels) if budget is not None else nullcontext():
                prepared = _decode(img, data, as_is, width, height, max_pixels, quality)
            prepared.ext = format_extension(img.format)
            return prepared
    except ImageProblem:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageProblem("decode", f"cannot decode image: {_plain(exc)}") from exc


def _decode(img: Image.Image, data: bytes, as_is: bool, width: int, height: int, max_pixels: int,
            quality: int) -> Prepared:
    """Decode (truncated or corrupt files fail here, not at the engine) and re-encode when needed."""
    target = (width, height)
    if width * height > max_pixels:
        factor = math.sqrt(max_pixels / (width * height))
        target = (max(1, int(width * factor)), max(1, int(height * factor)))
    if img.format == "JPEG":
        # DCT scaling: libjpeg still reads every coefficient (a truncated or corrupt stream fails as
        # in a full decode) but skips most of the inverse transform. An as-is JPEG is only
        # validated, so 1/8 scale is enough; a large one is decoded at the smallest scale that is
        # still at least the target size, then resized.
        wanted = (max(1, img.width // 8), max(1, img.height // 8)) if as_is else _stored(target, img, width)
        img.draft(img.mode, wanted)
    img.load()
    if as_is:  # already what an engine wants: the original bytes, no re-encode
        return Prepared(data, width, height)
    img = ImageOps.exif_transpose(img) or img
    img = _to_rgb(img)
    if img.size != target:
        img = img.resize(target, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    return Prepared(buffer.getvalue(), width, height)


def _stored(target: tuple[int, int], img: Image.Image, upright_width: int) -> tuple[int, int]:
    """The target size in the stored (pre-rotation) orientation, which is what `draft` scales."""
    return target if upright_width == img.width else (target[1], target[0])


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _plain(exc: Exception) -> str:
    """The message without object reprs (memory addresses differ per run; details must not)."""
    return _OBJECT_REPR.sub("the data", str(exc)) or type(exc).__name__


def sniff_extension(data: bytes) -> str | None:
    """The real format of encoded bytes ('jpg', 'png', ...), or None when not an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return format_extension(img.format)
    except Exception:
        return None


def format_extension(fmt: str | None) -> str | None:
    """PIL's format name -> the file extension used in records ('JPEG' -> 'jpg')."""
    name = (fmt or "").lower()
    return {"jpeg": "jpg", "mpo": "jpg", "tiff": "tif"}.get(name, name) or None


@lru_cache(maxsize=512)
def image_digest(data: bytes) -> str:
    """sha256 of image bytes, computed once per image: every request about it reuses the value."""
    return hashlib.sha256(data).hexdigest()
