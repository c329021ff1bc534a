"""WebDataset shards: `{key}.{ext}` holds the original bytes untouched, `{key}.json` the record."""

from __future__ import annotations

from pathlib import Path

import webdataset as wds

from builder.publish import layout
from builder.publish.writers.base import Writer
from builder.records import Record


class WebDatasetWriter(Writer):
    format = "webdataset"

    def final_path(self, shard: int) -> Path:
        return layout.tar_path(self.out, shard)

    def _open(self, path: Path) -> None:
        self._stream = open(path, "wb")
        self._tar = wds.TarWriter(self._stream)

    def _write(self, record: Record, image: bytes | None) -> None:
        sample: dict = {"__key__": record.key, "json": record.to_json()}
        if image:
            sample[record.ext or "bin"] = image
        self._tar.write(sample)

    def _close(self) -> None:
        self._tar.close()
        self._stream.close()
