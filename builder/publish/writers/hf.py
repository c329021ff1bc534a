"""Hugging Face Dataset in the Hub's parquet layout: data/train-XXXXX-of-YYYYY.parquet.

The features (Image, ClassLabel lists over the vocabulary) travel in the parquet schema metadata,
so `datasets.load_dataset(out_dir)` restores them without any loading script.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import ClassLabel, Features, Image, List, Value

from builder.publish import layout
from builder.publish.writers.base import Writer
from builder.recipe.vocab import Vocabulary
from builder.records import Record

ROW_GROUP = 64
_NAME = re.compile(r"^train-(\d{5})(?:-of-\d{5})?\.parquet$")


def hf_features(vocab: Vocabulary) -> Features:
    labels = ClassLabel(names=vocab.names)
    return Features({
        "key": Value("string"),
        "image": Image(),
        "labels": List(labels),
        "candidates": List(labels),
        "scores": List(Value("float32")),
        "reference": List(labels),
        "status": Value("string"),
        "error": Value("string"),
        "source": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "review": Value("string"),  # JSON: machine labels, who and when, for images a person corrected
    })


class HFWriter(Writer):
    format = "hf"

    def __init__(self, out: Path, vocab: Vocabulary, include_failed: bool = False):
        super().__init__(out, vocab, include_failed)
        self.features = hf_features(vocab)
        self.schema = self.features.arrow_schema
        self._ids = vocab.index()

    def final_path(self, shard: int) -> Path:
        existing = self._existing().get(shard)
        return existing or self.out / layout.HF_DIR / f"train-{shard:05d}.parquet"

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

    def _row(self, record: Record, image: bytes | None) -> dict:
        ids = self._ids
        return {
            "key": record.key,
            "image": {"bytes": image, "path": f"{record.key}.{record.ext}"} if image else None,
            "labels": [ids[n] for n in record.labels],
            "candidates": [ids[n] for n in record.candidates],
            "scores": [record.scores.get(n, 0.0) for n in record.candidates],
            "reference": [ids[n] for n in record.reference] if record.reference is not None else None,
            "status": record.status,
            "error": record.error,
            "source": json.dumps(record.source, sort_keys=True),
            "width": record.width,
            "height": record.height,
            "review": json.dumps(record.review, sort_keys=True) if record.review else None,
        }

    def _write(self, record: Record, image: bytes | None) -> None:
        self._rows.append(self._row(record, image))
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def _close(self) -> None:
        self._flush()
        self._writer.close()

    def finalize(self, shards: list[int]) -> None:
        """Name every file with the shard total, as the Hub's parquet layout does."""
        total = len(shards)
        for shard, path in sorted(self._existing().items()):
            target = path.with_name(f"train-{shard:05d}-of-{total:05d}.parquet")
            if path != target:
                os.replace(path, target)
