"""Thumbnails of a build, made once: a key's thumbnail is made when it is missing and kept after.

`relabel`, `review import` and a resumed build keep the images of the keys they rewrite, so their
gallery reuses every thumbnail and reads no image at all; `retry-failed` makes the thumbnails of
the items that now succeeded. Names come from a hash of the key (any key is a safe file name), in
256 folders so that no folder holds more than a few thousand files at a million images.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from builder.publish.gallery.images import images_of, make_thumbnail

THUMBS = "thumbs"


def thumb_name(key: str) -> str:
    """Path of a key's thumbnail, relative to the gallery folder."""
    h = hashlib.sha1(key.encode("utf-8")).hexdigest()
    return f"{THUMBS}/{h[:2]}/{h[2:18]}.jpg"


@dataclass
class ThumbReport:
    """What making the thumbnails cost, for the card and the build summary."""

    made: int = 0
    kept: int = 0
    unreadable: list[str] = field(default_factory=list)
    removed: int = 0
    seconds: float = 0.0
    files: int = 0
    bytes: int = 0


def update_thumbnails(folder: Path, out: Path, wanted: dict[int, list[str]], workers: int | None = None,
                      extra: Iterator[tuple[str, bytes]] | None = None) -> tuple[dict[str, str], ThumbReport]:
    """Make the missing thumbnails of `wanted` ({shard: ok keys}); remove those of keys gone.

    Returns {key: thumbnail path relative to `folder`} for every key that has one.
    """
    start = time.perf_counter()
    report = ThumbReport()
    names = {key: thumb_name(key) for keys in wanted.values() for key in keys}
    missing: dict[int, set[str]] = {}
    for shard, keys in wanted.items():
        todo = {k for k in keys if not (folder / names[k]).is_file()}
        report.kept += len(keys) - len(todo)
        if todo:
            missing[shard] = todo
    have = {k: n for k, n in names.items() if not any(k in m for m in missing.values())}
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes and resizes without the GIL
        for key, thumb in _made(pool, images_of(out, missing), workers * 8):
            if thumb is None:
                report.unreadable.append(key)
                continue
            path = folder / names[key]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(thumb)
            have[key] = names[key]
            report.made += 1
    report.removed = _prune(folder / THUMBS, set(names.values()))
    sizes = [p.stat().st_size for p in (folder / THUMBS).rglob("*.jpg")] if (folder / THUMBS).is_dir() else []
    report.files, report.bytes = len(sizes), sum(sizes)
    report.seconds = round(time.perf_counter() - start, 3)
    return have, report


def _made(pool: ThreadPoolExecutor, images: Iterator[tuple[str, bytes]],
          chunk: int) -> Iterator[tuple[str, bytes | None]]:
    """Thumbnails in bounded chunks (Executor.map would read every image before the first result)."""
    batch: list[tuple[str, bytes]] = []
    for item in images:
        batch.append(item)
        if len(batch) >= chunk:
            yield from zip([k for k, _ in batch], pool.map(_safe_thumb, [d for _, d in batch]))
            batch = []
    if batch:
        yield from zip([k for k, _ in batch], pool.map(_safe_thumb, [d for _, d in batch]))


def _safe_thumb(data: bytes) -> bytes | None:
    try:
        return make_thumbnail(data)
    except (OSError, ValueError, SyntaxError):  # Pillow's errors for unreadable or truncated images
        return None


def _prune(root: Path, keep: set[str]) -> int:
    """Remove thumbnails no record points at (a source that shrank, a build gone)."""
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.rglob("*.jpg"):
        if f"{THUMBS}/{path.parent.name}/{path.name}" not in keep:
            path.unlink()
            removed += 1
    return removed
