"""The parquet index: one row per record, every record (ok and failed), no image bytes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from builder.publish import layout
from builder.publish.writers.base import Writer
from builder.records import Record

SCHEMA = pa.schema([
    ("key", pa.string()), ("status", pa.string()), ("labels", pa.string()), ("scores", pa.string()),
    ("candidates", pa.string()), ("reference", pa.string()), ("error", pa.string()), ("detail", pa.string()),
    ("raw", pa.string()), ("source", pa.string()), ("ext", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("usage", pa.string()), ("simulated", pa.bool_()), ("shard", pa.int32()),
    ("review", pa.string()),
])


class IndexWriter(Writer):
    format = "index"

    def final_path(self, shard: int) -> Path:
        return layout.index_path(self.out, shard)

    def _open(self, path: Path) -> None:
        self._path = path
        self._rows: list[dict] = []

    def _write(self, record: Record, image: bytes | None) -> None:
        self._rows.append(layout.record_row(record, self.shard or 0))

    def _close(self) -> None:
        pq.write_table(pa.Table.from_pylist(self._rows, schema=SCHEMA), self._path)
        self._rows = []
