"""WebDataset shards: `{key}.jpg` holds the original image bytes untouched, `{key}.json` the record.

Every sample uses the same two member names, whatever the image format (the record's `ext` says
which it is): loaders that take their schema from the first samples (datasets' webdataset builder)
would otherwise drop a PNG after JPEGs. Both `webdataset` and `datasets` decode by content.
Member names are made safe for tar and for every reader: no control characters, no leading '-',
no '.' or '/' inside the key (a changed key gets a short hash of the original, which stays in
the record).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import webdataset as wds

from builder.publish import layout
from builder.publish.writers.base import Writer
from builder.records import Record

IMAGE_MEMBER = "jpg"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\.]")


def member_key(key: str) -> str:
    """A tar sample name readers split correctly; unchanged for ordinary keys."""
    safe = _UNSAFE.sub("_", key).lstrip("-") or "_"
    if safe == key:
        return key
    return f"{safe}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


class WebDatasetWriter(Writer):
    format = "webdataset"

    def final_path(self, shard: int) -> Path:
        return layout.tar_path(self.out, shard)

    def _open(self, path: Path) -> None:
        self._stream = open(path, "wb")
        self._tar = wds.TarWriter(self._stream)

    def _write(self, record: Record, image: bytes | None) -> None:
        sample: dict = {"__key__": member_key(record.key), "json": record.to_sample_json()}
        if image:
            sample[IMAGE_MEMBER] = image
        self._tar.write(sample)

    def _close(self) -> None:
        self._tar.close()
        self._stream.close()
