"""Where everything lives in an output folder, and how to read the records back.

OUT/  (what a build writes; shard-00000 is shard 0 of n)
  manifest.json                 run state: recipe digest, status, engine, formats, shard count, times
  recipe.yaml                   the resolved recipe (reproduces the build)
  concepts.yaml                 the concept sheet used, when the recipe has one
  README.md                     the dataset card
  stats.json                    totals over all shards: counts, tokens, failures by reason, cost, engine
  cache.sqlite                  request cache: every engine answer, keyed by request hash
  caches/NAME.sqlite            a part's or Ray worker's own cache, folded into cache.sqlite at the end
  index/shard-00000.parquet     one row per record, ok and failed: every field but the image
  index/shard-00000.stats.json  per-shard counts; written last, it marks the shard complete
  webdataset/shard-00000.tar    {key}.jpg original bytes (any format) + {key}.json record
  data/train-00000-of-00003.parquet   Hugging Face layout: image, ClassLabel labels, scores, ...
  .tagllm.lock                  the writer lock while a build runs (builder.run.lock); gone after it
An output in an object store (s3://, gs://) holds the same objects; each process builds it in a
working folder of its own and puts the files there (builder.publish.store).
Later commands add eval/ (`tagllm eval`), issues/ (`tagllm issues`) and review/corrections.jsonl
(`tagllm review import`).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from builder import storage
from builder.errors import UserError
from builder.records import ENCODED_KINDS, FIELD_KINDS, EncodedRecord, Record

MANIFEST = "manifest.json"
RECIPE = "recipe.yaml"
CONCEPTS = "concepts.yaml"
CARD = "README.md"
STATS = "stats.json"
CACHE = "cache.sqlite"
INDEX_DIR = "index"
WDS_DIR = "webdataset"
HF_DIR = "data"
CACHES_DIR = "caches"  # caches/NAME.sqlite: a part's or worker's own request cache (builder.ask.cache_files)
PARTS_DIR = "parts"  # parts/part-I-of-N.json: what a `--part` build did (builder.run.parts)
LOCK = ".tagllm.lock"  # the writer lock (builder.run.lock); parts add .tagllm.part-I-of-N.lock
CONTACT_SHEET = "contact_sheet.jpg"  # beside the card (publish.gallery.contact_sheet)
STORE_MARKER = ".tagllm.store.json"  # a working folder of an object-store output names its URL (publish.store)


def is_lock(name: str) -> bool:
    """Lock files, and a working folder's store marker: a build's own, never "content" of the folder."""
    return name.startswith(".tagllm.") and (name.endswith(".lock") or name == STORE_MARKER)


def clear_folder(out: Path) -> None:
    """Delete everything in `out` but its lock files (held by this build while it clears)."""
    import shutil

    for path in out.iterdir():
        if is_lock(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def index_path(out: Path, shard: int) -> Path:
    return out / INDEX_DIR / f"{shard_name(shard)}.parquet"


def shard_stats_path(out: Path, shard: int) -> Path:
    return out / INDEX_DIR / f"{shard_name(shard)}.stats.json"


def tar_path(out: Path, shard: int) -> Path:
    return out / WDS_DIR / f"{shard_name(shard)}.tar"


def hf_file_name(shard: int, total: int | None = None) -> str:
    """train-00003.parquet while the shard total is unknown, train-00003-of-00010.parquet (the Hub's) once it is."""
    return f"train-{shard:05d}.parquet" if total is None else f"train-{shard:05d}-of-{total:05d}.parquet"


def shard_of_mark(name: str) -> int | None:
    """3 for 'shard-00003.stats.json' (a shard's completion mark); None for any other name."""
    if not (name.startswith("shard-") and name.endswith(".stats.json")):
        return None
    try:
        return int(name.split(".")[0].split("-")[1])
    except (IndexError, ValueError):
        return None


def completed_shards(out: Path) -> list[int]:
    """Shards whose stats json exists: the last file written for a shard."""
    folder = out / INDEX_DIR
    if not folder.is_dir():
        return []
    return sorted(k for k in map(shard_of_mark, (p.name for p in folder.glob("shard-*.stats.json"))) if k is not None)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Write under a temporary name of this process and rename, so a reader never sees half a file
    (parts write the manifest at the same time; a temporary name of a dead process is a leftover)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str), encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: leave no half-written temporary file behind
        raise


def recorded_runs(out: Path, manifest: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The [started, finished] spans of the runs that made the folder: the manifest's, then each part's."""
    if manifest is None:
        manifest = read_json(out / MANIFEST) if (out / MANIFEST).is_file() else {}
    runs = list(manifest.get("runs") or [])
    for marker in sorted((out / PARTS_DIR).glob("part-*.json")):
        runs += read_json(marker).get("runs") or []
    return runs


def require_output(out: Path) -> Path:
    out = Path(out)
    url = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*):/+", r"\1://", str(out))  # a Path folds s3://b into s3:/b
    if storage.is_url(url) and not out.exists():
        raise UserError(f"{url}: an object-store output; this command reads a local folder: copy it down first "
                        f"(`aws s3 sync` for s3://, `gcloud storage rsync` for gs://), then run it on that folder")
    if not (out / MANIFEST).is_file():
        raise UserError(f"{out}: not a tagllm output folder (no {MANIFEST})")
    return out


# Columns of the index parquet held as JSON text (lists and nested values), keeping the schema flat.
JSON_COLUMNS = tuple(name for name, kind in FIELD_KINDS.items() if kind in ENCODED_KINDS)


def record_row(encoded: EncodedRecord, shard: int) -> dict[str, Any]:
    """The record's index row: every field, the JSON columns as `encoded` holds their text, and its shard."""
    row = encoded.record.to_json()
    row.update(encoded.texts)
    row["shard"] = shard
    return row


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
