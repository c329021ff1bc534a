"""Read a build's original image bytes back, shard by shard, and make small thumbnails of them.

A build stores each image's original bytes twice at most (HF parquet, WebDataset tar); either one
will do. Images are streamed one row group or tar member at a time, so memory stays near one
batch whatever the build's size. Thumbnails are decoded with JPEG draft mode (the DCT scales the
image down while decoding), turned upright by their EXIF orientation, and saved as small JPEGs.
"""

from __future__ import annotations

import io
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image, ImageOps

from builder.publish import layout
from builder.publish.store import store_of
from builder.publish.writers.webdataset import member_key

THUMB_SIZE = 256  # longest side, pixels: sharp at 2x in the gallery's 128-px-high rows
THUMB_QUALITY = 80
BATCH = 32
ORIENTATION = 0x0112  # the EXIF tag


def hf_shard_file(out: Path, shard: int) -> Path | None:
    for path in sorted((out / layout.HF_DIR).glob(f"train-{shard:05d}*.parquet")):
        return path
    return None


def shard_images(out: Path, shard: int, keys: set[str]) -> Iterator[tuple[str, bytes]]:
    """(key, original bytes) of the wanted keys of one shard, from the HF parquet or else the tar.

    A working folder of an object-store output reads the store's file of a shard it does not hold."""
    path = hf_shard_file(out, shard)
    tar_file = layout.tar_path(out, shard)
    if path is None and not tar_file.is_file():
        store = store_of(out)
        if store is not None:
            with store.shard_file(shard) as found:
                if found is not None:
                    yield from _images_in(found[0], found[1], keys)
        return
    if path is not None:
        yield from _images_in("parquet", path, keys)
    else:
        yield from _images_in("tar", tar_file, keys)


def _images_in(kind: str, file: Any, keys: set[str]) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of the wanted keys in one HF parquet or tar (a path or a readable file object)."""
    if kind == "parquet":
        for batch in pq.ParquetFile(file).iter_batches(batch_size=BATCH, columns=["key", "image"]):
            for row in batch.to_pylist():
                image = row.get("image") or {}
                if row["key"] in keys and image.get("bytes"):
                    yield row["key"], image["bytes"]
        return
    by_member = {member_key(k): k for k in keys}
    with tarfile.open(**({"name": file} if isinstance(file, Path) else {"fileobj": file, "mode": "r|*"})) as tar:
        for member in tar:
            name, _, ext = member.name.partition(".")
            if ext != "json" and name in by_member and member.isfile():
                yield by_member[name], tar.extractfile(member).read()  # type: ignore[union-attr]


def images_of(out: Path, wanted: dict[int, set[str]]) -> Iterator[tuple[str, bytes]]:
    """Stream the wanted keys' bytes, shard by shard (shards with nothing wanted are not opened)."""
    for shard in sorted(wanted):
        if wanted[shard]:
            yield from shard_images(out, shard, wanted[shard])


def make_thumbnail(data: bytes, size: int = THUMB_SIZE) -> bytes:
    """A JPEG no larger than size x size; raises OSError/ValueError on an unreadable image."""
    img = open_rgb(data, (size, size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return buf.getvalue()


def open_rgb(data: bytes, box: tuple[int, int]) -> Image.Image:
    """The image upright and in RGB, fitted into `box` (thumbnails, the contact sheet)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = Image.open(io.BytesIO(data))
        scale = min(box[0] / img.width, box[1] / img.height, 1.0)
        # JPEG: the decoder scales by 1/2, 1/4 or 1/8 while decoding, down to no less than the fitted size
        img.draft("RGB", (max(1, int(img.width * scale)), max(1, int(img.height * scale))))
        if img.getexif().get(ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
        img = _rgb(img)
        img.thumbnail(box, Image.Resampling.LANCZOS)
    return img


def _rgb(img: Image.Image) -> Image.Image:
    """Any mode to RGB; transparency is laid over white, as a browser shows it on a white page."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        back = Image.new("RGB", rgba.size, (255, 255, 255))
        back.paste(rgba, mask=rgba.getchannel("A"))
        return back
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return img.point(lambda v: v / 256).convert("L").convert("RGB")
    return img.convert("RGB")


def folder_bytes(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())
