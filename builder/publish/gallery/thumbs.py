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


class Thumbnailer:
    """Makes the missing thumbnails shard by shard, then removes those no key points at any more."""

    def __init__(self, folder: Path, out: Path, workers: int | None = None):
        self.folder, self.out = folder, out
        self.report = ThumbReport()
        self.names: set[str] = set()
        self._start = time.perf_counter()
        self._pool = ThreadPoolExecutor(max_workers=workers or max(1, min(4, os.cpu_count() or 1)))

    def shard(self, shard: int, keys: list[str]) -> dict[str, str]:
        """{key: thumbnail path relative to the gallery} of this shard's ok keys that have one."""
        names = {key: thumb_name(key) for key in keys}
        self.names.update(names.values())
        todo = {k for k, n in names.items() if not (self.folder / n).is_file()}
        self.report.kept += len(keys) - len(todo)
        have = {k: n for k, n in names.items() if k not in todo}
        if todo:  # Pillow decodes and resizes without the GIL, so threads run in parallel
            for key, thumb in _made(self._pool, images_of(self.out, {shard: todo}), self._pool._max_workers * 8):
                if thumb is None:
                    self.report.unreadable.append(key)
                    continue
                path = self.folder / names[key]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(thumb)
                have[key] = names[key]
                self.report.made += 1
        return have

    def close(self) -> ThumbReport:
        self._pool.shutdown()
        report = self.report
        report.removed = _prune(self.folder / THUMBS, self.names)
        sizes = [p.stat().st_size for p in (self.folder / THUMBS).rglob("*.jpg")] \
            if (self.folder / THUMBS).is_dir() else []
        report.files, report.bytes = len(sizes), sum(sizes)
        report.seconds = round(time.perf_counter() - self._start, 3)
        return report


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
