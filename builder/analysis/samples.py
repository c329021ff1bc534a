"""Images and labels of a build or of a human-labeled split, read lazily, and their content digests.

Training reads a build's WebDataset shards (the HF parquet when no shards were written), only
records with status "ok". A test split or a reference is an image folder with `metadata.jsonl`,
a recipe YAML, or another tagllm output (its human `reference` labels). Digests of the image
bytes tell whether two sources that share keys share images too.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.images import image_digest
from builder.publish import layout
from builder.recipe.vocab import Vocabulary, read_yaml, vocabulary_from_data
from builder.records import Item, Record


@dataclass
class Sample:
    """Where one image's bytes are (a tar member, a file, or in memory) and its label names."""

    key: str
    labels: list[str]
    tar: str | None = None
    offset: int = 0
    size: int = 0
    file: str | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.file is not None:
            return Path(self.file).read_bytes()
        with open(self.tar, "rb") as f:  # type: ignore[arg-type]
            f.seek(self.offset)
            return f.read(self.size)

    def digest(self) -> str:
        return image_digest(self.read())


def output_vocabulary(out: Path) -> tuple[Vocabulary, dict[str, Any]]:
    """The vocabulary of a build and its resolved recipe data (read as data, no referenced files needed)."""
    data = read_yaml(Path(out) / layout.RECIPE)
    if not isinstance(data, dict) or not isinstance(data.get("vocabulary"), dict):
        raise UserError(f"{out}/{layout.RECIPE}: no inline vocabulary (not a resolved recipe)")
    return vocabulary_from_data(data["vocabulary"], f"{out}/{layout.RECIPE}: vocabulary"), data


def is_output(path: str | Path) -> bool:
    return (Path(path) / layout.MANIFEST).is_file()


def source_items(source: str | Path, vocab: Vocabulary) -> Iterator[Item]:
    """Items (key, image bytes, human labels) of a recipe's source or of an image folder."""
    from builder.recipe.model import SourceSpec, load_recipe
    from builder.sources import open_source

    path = Path(source)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        loaded = load_recipe(path)
        if loaded.vocab.names != vocab.names:
            raise UserError(f"{path}: its vocabulary differs from the evaluated dataset's")
        yield from open_source(loaded.recipe.source, vocab, loaded.base_dir)
    elif path.is_dir():
        yield from open_source(SourceSpec(kind="folder", path=str(path.resolve())), vocab, path.resolve())
    else:
        raise UserError(f"{source}: not a tagllm output folder, recipe YAML or image folder")


def _tar_records(path: Path) -> Iterator[tuple[Record, tarfile.TarInfo | None]]:
    """Each record of a WebDataset shard with the tar member holding its image (read lazily later)."""
    with tarfile.open(path) as tar:
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        for m in tar:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")
            members.setdefault(key, {})[ext] = m
        for parts in members.values():
            if "json" not in parts:
                continue
            record = Record.from_json(json.loads(tar.extractfile(parts["json"]).read()))  # type: ignore[union-attr]
            yield record, parts.get("jpg") or parts.get(record.ext or "bin")  # one image member name


def output_samples(out: Path, vocab: Vocabulary, labels: str) -> tuple[list[Sample], dict[str, int]]:
    """Samples of a build with `labels` ("machine" or "reference") as targets, and what was skipped.

    Only records with status "ok" and an image count; with `labels="reference"`, also only records
    that carry human labels.
    """
    out = layout.require_output(out)
    skipped = {"failed": 0, "no_image": 0, "no_reference": 0}
    samples: list[Sample] = []
    tars = [layout.tar_path(out, s) for s in layout.completed_shards(out) if layout.tar_path(out, s).is_file()]
    rows: Iterator[tuple[Record, Sample | None]]
    if tars:
        rows = ((r, Sample(r.key, [], tar=str(t), offset=m.offset_data, size=m.size) if m else None)
                for t in tars for r, m in _tar_records(t))
    else:
        rows = _hf_rows(out, vocab)
    for record, sample in rows:
        if record.status != "ok":
            skipped["failed"] += 1
        elif sample is None:
            skipped["no_image"] += 1
        elif labels == "reference" and record.reference is None:
            skipped["no_reference"] += 1
        else:
            sample.labels = list(record.labels if labels == "machine" else record.reference or [])
            samples.append(sample)
    return samples, skipped


def _hf_rows(out: Path, vocab: Vocabulary) -> Iterator[tuple[Record, Sample | None]]:
    """Records from the HF parquet files (images held in memory: used when no shards exist)."""
    import pyarrow.parquet as pq

    files = sorted((out / layout.HF_DIR).glob("train-*.parquet"))
    if not files:
        raise UserError(f"{out}: no WebDataset shards and no HF parquet files to read images from")
    names = vocab.names
    for f in files:
        for row in pq.read_table(f, columns=["key", "image", "labels", "reference", "status"]).to_pylist():
            as_names = [names[i] for i in row["labels"] or []]
            ref = [names[i] for i in row["reference"]] if row["reference"] is not None else None
            record = Record(key=row["key"], status=row["status"], labels=as_names, reference=ref)
            image = (row["image"] or {}).get("bytes")
            yield record, Sample(row["key"], [], data=image) if image else None


def split_samples(source: str | Path, vocab: Vocabulary) -> list[Sample]:
    """A human-labeled split: another tagllm output (its reference labels), a recipe, or a folder."""
    path = Path(source)
    if is_output(path):
        test_vocab, _ = output_vocabulary(path)
        if test_vocab.names != vocab.names:
            raise UserError(f"{source}: its vocabulary differs from the training dataset's")
        samples, _ = output_samples(path, vocab, "reference")
    else:
        samples = []
        for item in source_items(path, vocab):
            if item.error or item.reference is None:
                continue
            where = item.ref.get("path")
            file = (path / where) if path.is_dir() and where else None
            if file is not None and file.is_file():
                samples.append(Sample(item.key, item.reference, file=str(file)))
            else:
                samples.append(Sample(item.key, item.reference, data=item.image))
    if not samples:
        raise UserError(f"{source}: no human-labeled images to test on")
    return samples


def digests(samples: Iterable[Sample]) -> dict[str, str]:
    """Key -> sha256 of the image bytes."""
    return {s.key: s.digest() for s in samples}


def compare_images(ours: dict[str, str], theirs: dict[str, str]) -> dict[str, Any]:
    """Keys both sides share whose images differ, and images (by content) both sides hold."""
    shared = ours.keys() & theirs.keys()
    differ = sorted(k for k in shared if ours[k] != theirs[k])
    overlap = set(ours.values()) & set(theirs.values())
    return {"shared_keys": len(shared), "key_matches_other_image": len(differ), "examples": differ[:5],
            "same_images": len(overlap)}
