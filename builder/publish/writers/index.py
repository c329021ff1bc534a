"""The parquet index: one row per record, every record (ok and failed), no image bytes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from builder.publish import layout
from builder.publish.writers.base import Writer
from builder.records import COUNT, FIELD_KINDS, FLAG, EncodedRecord

_TYPES = {COUNT: pa.int32(), FLAG: pa.bool_()}  # every other kind is text, plain or JSON
SCHEMA = pa.schema([(name, _TYPES.get(kind, pa.string())) for name, kind in FIELD_KINDS.items()]
                   + [("shard", pa.int32())])


class IndexWriter(Writer):
    format = "index"

    def final_path(self, shard: int) -> Path:
        return layout.index_path(self.out, shard)

    def _open(self, path: Path) -> None:
        self._path = path
        self._rows: list[dict] = []

    def _write(self, encoded: EncodedRecord, image: bytes | None) -> None:
        self._rows.append(layout.record_row(encoded, self.shard or 0))

    def _discard(self) -> None:
        self._rows = []

    def _close(self) -> None:
        pq.write_table(pa.Table.from_pylist(self._rows, schema=SCHEMA), self._path)
        self._rows = []
