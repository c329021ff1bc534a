"""Hugging Face Dataset in the Hub's parquet layout: data/train-XXXXX-of-YYYYY.parquet.

The features (Image, ClassLabel lists over the vocabulary) travel in the parquet schema metadata,
so `datasets.load_dataset(out_dir)` restores them without any loading script.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import ClassLabel, Features, Image, List, Value

from builder.publish import layout
from builder.publish.writers.base import Writer
from builder.recipe.vocab import Vocabulary
from builder.records import COUNT, DATASET_FIELDS, FIELD_KINDS, FLAG, NAMES, NESTED, SCORES, TEXT, EncodedRecord

ROW_GROUP = 64
_NAME = re.compile(r"^train-(\d{5})(?:-of-\d{5})?\.parquet$")


def hf_features(vocab: Vocabulary) -> Features:
    """The dataset fields of a record (`DATASET_FIELDS`), typed by kind, with the image after the key."""
    labels = ClassLabel(names=vocab.names)
    types = {TEXT: Value("string"), COUNT: Value("int32"), FLAG: Value("bool"), NAMES: List(labels),
             SCORES: List(Value("float32")), NESTED: Value("string")}  # nested: its JSON text
    features = {name: types[FIELD_KINDS[name]] for name in DATASET_FIELDS}
    return Features({"key": features.pop("key"), "image": Image(), **features})


class HFWriter(Writer):
    format = "hf"

    def __init__(self, out: Path, vocab: Vocabulary, include_failed: bool = False):
        super().__init__(out, vocab, include_failed)
        self.features = hf_features(vocab)
        self.schema = self.features.arrow_schema
        self._ids = vocab.index()

    def final_path(self, shard: int) -> Path:
        existing = self._existing().get(shard)
        return existing or self.out / layout.HF_DIR / layout.hf_file_name(shard)

    def _existing(self) -> dict[int, Path]:
        folder = self.out / layout.HF_DIR
        found: dict[int, Path] = {}
        if folder.is_dir():
            for p in folder.iterdir():
                m = _NAME.match(p.name)
                if m:
                    found[int(m.group(1))] = p
        return found

    def begin_shard(self, shard: int) -> None:
        old = self._existing().get(shard)
        if old is not None:
            old.unlink()  # a rewritten shard gets its plain name until finalize
        super().begin_shard(shard)

    def _open(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(path, self.schema)
        self._rows: list[dict] = []

    def _row(self, encoded: EncodedRecord, image: bytes | None) -> dict:
        record, ids = encoded.record, self._ids
        row: dict = {"image": {"bytes": image, "path": f"{record.key}.{record.ext}"} if image else None}
        for name in DATASET_FIELDS:
            kind, value = FIELD_KINDS[name], getattr(record, name)
            if kind == NAMES:
                value = None if value is None else [ids[n] for n in value]
            elif kind == SCORES:
                value = record.aligned_scores()
            elif kind == NESTED:
                value = None if value is None else encoded.texts[name]
            row[name] = value
        return row

    def _write(self, encoded: EncodedRecord, image: bytes | None) -> None:
        self._rows.append(self._row(encoded, image))
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def _close(self) -> None:
        self._flush()
        self._writer.close()

    def _discard(self) -> None:
        self._rows = []
        try:
            self._writer.close()
        finally:
            self._writer.is_open = False  # a close that failed (full disk) is not retried when it is collected

    def finalize(self, shards: list[int]) -> None:
        """Name every file with the shard total, as the Hub's parquet layout does."""
        total = len(shards)
        for shard, path in sorted(self._existing().items()):
            target = path.with_name(layout.hf_file_name(shard, total))
            if path != target:
                os.replace(path, target)
