"""Where everything lives in an output folder, and how to read the records back.

OUT/
  manifest.json                 run state: recipe digest, status, shard count
  recipe.yaml                   the resolved recipe (reproduces the build)
  concepts.yaml                 the concept sheet used, when one was given
  README.md                     the dataset card
  stats.json                    totals over all shards (+ cost, + eval when present)
  cache.sqlite                  request cache: every engine answer, keyed by request hash
  index/shard-00000.parquet     one row per record (all fields but the image)
  index/shard-00000.stats.json  per-shard counts; written last, it marks the shard complete
  webdataset/shard-00000.tar    {key}.{ext} original bytes + {key}.json record
  data/train-00000-of-00002.parquet   Hugging Face layout (image, labels, scores, ...)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from builder.errors import UserError
from builder.records import Record

MANIFEST = "manifest.json"
RECIPE = "recipe.yaml"
CONCEPTS = "concepts.yaml"
CARD = "README.md"
STATS = "stats.json"
CACHE = "cache.sqlite"
INDEX_DIR = "index"
WDS_DIR = "webdataset"
HF_DIR = "data"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def index_path(out: Path, shard: int) -> Path:
    return out / INDEX_DIR / f"{shard_name(shard)}.parquet"


def shard_stats_path(out: Path, shard: int) -> Path:
    return out / INDEX_DIR / f"{shard_name(shard)}.stats.json"


def tar_path(out: Path, shard: int) -> Path:
    return out / WDS_DIR / f"{shard_name(shard)}.tar"


def completed_shards(out: Path) -> list[int]:
    """Shards whose stats json exists: the last file written for a shard."""
    folder = out / INDEX_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.glob("shard-*.stats.json"):
        try:
            found.append(int(p.name.split(".")[0].split("-")[1]))
        except (IndexError, ValueError):
            continue
    return sorted(found)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Write under a temporary name of this process and rename, so a reader never sees half a file
    (parts write the manifest at the same time; a temporary name of a dead process is a leftover)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str), encoding="utf-8")
    tmp.replace(path)


def require_output(out: Path) -> Path:
    out = Path(out)
    if not (out / MANIFEST).is_file():
        raise UserError(f"{out}: not a tagllm output folder (no {MANIFEST})")
    return out


# Columns of the index parquet; nested values are stored as JSON strings to keep the schema flat.
JSON_COLUMNS = ("labels", "scores", "candidates", "reference", "raw", "source", "usage", "review")


def record_row(record: Record, shard: int) -> dict[str, Any]:
    row = record.to_json()
    row.update(_encoded(record)[0])
    row["shard"] = shard
    return row


def sample_json(record: Record) -> bytes:
    """`record.to_sample_json()` as compact UTF-8 JSON, sharing the nested parts' encoding with the index row."""
    return _encoded(record)[1]


_last: tuple[Record, tuple, tuple[dict[str, str], bytes]] | None = None  # the record both writers just wrote


def _encoded(record: Record) -> tuple[dict[str, str], bytes]:
    """(JSON text of each nested column, the sample json): encoded once per record, read by two writers."""
    global _last
    state = (record.status, record.labels, record.scores, record.candidates, record.raw, record.usage,
             record.review, record.source, record.error, record.detail, record.width, record.height)
    if _last is not None and _last[0] is record and all(a is b for a, b in zip(_last[1], state)):
        return _last[2]
    data = record.to_sample_json()
    texts = {col: _dumps(data[col]) for col in JSON_COLUMNS if col != "scores"}
    sample = dict(texts, scores=_dumps(data["scores"]))  # the sample's scores: a list aligned with candidates
    texts["scores"] = _dumps(record.scores)  # the index's: a dict
    parts = [f'"{k}":{sample[k] if k in sample else _dumps(v)}' for k, v in data.items()]
    made = (texts, ("{" + ",".join(parts) + "}").encode("utf-8"))
    _last = (record, state, made)
    return made


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def row_record(row: dict[str, Any]) -> Record:
    data = dict(row)
    for col in JSON_COLUMNS:
        if isinstance(data.get(col), str):
            data[col] = json.loads(data[col])
    data.pop("shard", None)
    return Record.from_json(data)


def iter_records(out: Path) -> Iterator[Record]:
    """Every record of a build, shard by shard, in source order (images not included)."""
    out = require_output(out)
    for shard in completed_shards(out):
        table = pq.read_table(index_path(out, shard))
        for row in table.to_pylist():
            yield row_record(row)
