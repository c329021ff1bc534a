"""WebDataset shards: `{key}.jpg` holds the original image bytes untouched, `{key}.json` the record.

Every sample uses the same two member names, whatever the image format (the record's `ext` says
which it is): loaders that take their schema from the first samples (datasets' webdataset builder)
would otherwise drop a PNG after JPEGs. Both `webdataset` and `datasets` decode by content.
Member names are made safe for tar and for every reader: no control characters, no leading '-',
no '.' or '/' inside the key (a changed key gets a short hash of the original, which stays in
the record).

The tars are written with the standard library's `tarfile` in webdataset's layout (one member per
field, a sample's members adjacent and in sorted order, read-only mode bits), so
`webdataset.WebDataset` reads them as its own: `import webdataset` would import torch (~0.5 GB of
RSS and seconds per process start) for a writer that only needs `tarfile`.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time
from pathlib import Path
from typing import BinaryIO

from builder.publish import layout
from builder.publish.writers.base import Writer
from builder.records import EncodedRecord

IMAGE_MEMBER = "jpg"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\.]")


def member_key(key: str) -> str:
    """A tar sample name readers split correctly; unchanged for ordinary keys."""
    safe = _UNSAFE.sub("_", key).lstrip("-") or "_"
    if safe == key:
        return key
    return f"{safe}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


class TarSamples:
    """Append samples (`{ext: bytes}` under one key) to an open binary stream as tar members."""

    def __init__(self, stream: BinaryIO, mtime: float | None = None):
        self._tar = tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT)
        self._mtime = int(time.time() if mtime is None else mtime)

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        """`key` must already be a safe member name (`member_key`): webdataset splits names at dots."""
        for ext in sorted(fields):
            data = fields[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = self._mtime
            info.mode = 0o444
            self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()


class WebDatasetWriter(Writer):
    format = "webdataset"

    def final_path(self, shard: int) -> Path:
        return layout.tar_path(self.out, shard)

    def _open(self, path: Path) -> None:
        self._stream = open(path, "wb")
        self._tar = TarSamples(self._stream)

    def _write(self, encoded: EncodedRecord, image: bytes | None) -> None:
        fields = {"json": encoded.sample_json}
        if image:
            fields[IMAGE_MEMBER] = image
        self._tar.write(member_key(encoded.record.key), fields)

    def _close(self) -> None:
        self._tar.close()
        self._stream.close()

    def _discard(self) -> None:
        try:
            self._tar.close()
        finally:
            self._stream.close()
