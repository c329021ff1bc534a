"""The units that flow through a build: a source item in, one output record out.

`Record`'s fields are the one list of what a record holds: each field's metadata says what kind of
value it is and whether the published dataset (the HF parquet) carries it, and every writer derives
its columns from them. `EncodedRecord` encodes a record's JSON once for all the writers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

# Key of `Item.ref` (and so of `Record.source`) listing the vocabulary labels a person checked and found
# absent. Where a record has it, only those labels count as negatives in `tagllm eval`; the labels that are
# neither in `reference` nor here were never checked (Open Images) or are ambiguous (VOC "difficult").
VERIFIED_ABSENT = "verified_absent"

# The kinds of value a record field holds. Names, scores and nested values are stored as JSON text in
# the index (one flat schema), the other kinds as plain columns.
TEXT, COUNT, FLAG = "text", "count", "flag"
NAMES = "names"  # a list of vocabulary labels (None where there is none, as for `reference`)
SCORES = "scores"  # label -> P(yes); a list aligned with `candidates` in the sample json and HF rows
NESTED = "nested"  # free-form JSON (answers, source reference, usage, review)
ENCODED_KINDS = frozenset({NAMES, SCORES, NESTED})


@dataclass
class Item:
    """One source item: a stable key, the original encoded bytes, and where it came from."""

    key: str
    image: bytes | None
    ext: str
    ref: dict[str, Any]
    reference: list[str] | None = None
    # why the source could not deliver the item: "missing", "empty", "source", or (img2dataset output)
    # "download" / "resize" for urls img2dataset failed to fetch or to decode
    error: str | None = None
    detail: str = ""
    # what a web-scraped source knows of the item (img2dataset); None elsewhere
    caption: str | None = None
    url: str | None = None
    original_width: int | None = None  # the size as downloaded, before any resize by the downloader
    original_height: int | None = None


def _field(kind: str, dataset: bool = True, **default: Any) -> Any:
    """A record field of `kind`; `dataset=False` keeps it out of the published dataset (index and tar only)."""
    return field(metadata={"kind": kind, "dataset": dataset}, **default)


@dataclass
class Record:
    """Exactly one per source item; what the writers store beside the image."""

    key: str = _field(TEXT)
    status: str = _field(TEXT)  # "ok" or "failed"
    labels: list[str] = _field(NAMES, default_factory=list)
    scores: dict[str, float] = _field(SCORES, default_factory=dict)
    candidates: list[str] = _field(NAMES, default_factory=list)
    reference: list[str] | None = _field(NAMES, default=None)
    error: str | None = _field(TEXT, default=None)  # the failure reason when status is "failed"
    detail: str = _field(TEXT, False, default="")
    raw: list[dict[str, Any]] = _field(NESTED, False, default_factory=list)
    source: dict[str, Any] = _field(NESTED, default_factory=dict)
    ext: str = _field(TEXT, False, default="")
    width: int | None = _field(COUNT, default=None)
    height: int | None = _field(COUNT, default=None)
    # copied from the item where its source has them (img2dataset); None for other sources
    caption: str | None = _field(TEXT, default=None)
    url: str | None = _field(TEXT, default=None)
    original_width: int | None = _field(COUNT, default=None)
    original_height: int | None = _field(COUNT, default=None)
    usage: dict[str, float] = _field(NESTED, False, default_factory=dict)
    simulated: bool = _field(FLAG, False, default=False)
    # set when a person corrected the labels (machine labels kept here)
    review: dict[str, Any] | None = _field(NESTED, default=None)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELD_KINDS}

    def to_sample_json(self) -> dict[str, Any]:
        """The record as stored beside the image in a WebDataset shard: every field keeps one shape
        across samples (scores as a list aligned with `candidates`), so loaders that infer a schema
        from the first samples (datasets' webdataset builder) lose nothing."""
        data = self.to_json()
        data["scores"] = self.aligned_scores()
        return data

    def aligned_scores(self) -> list[float]:
        """`scores` as a list aligned with `candidates` (0.0 where a candidate has no score)."""
        return [self.scores.get(name, 0.0) for name in self.candidates]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        data = dict(data)
        if isinstance(data.get("scores"), list):  # the WebDataset form: aligned with candidates
            data["scores"] = dict(zip(data.get("candidates") or [], data["scores"]))
        return cls(**{k: data[k] for k in FIELD_KINDS if k in data})


# Field name -> kind, in the record's order; and the fields the published dataset carries.
FIELD_KINDS: dict[str, str] = {f.name: f.metadata["kind"] for f in fields(Record)}
DATASET_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Record) if f.metadata["dataset"])


class EncodedRecord:
    """A record with its JSON encoded once, handed to every writer of the record.

    `texts` holds the compact JSON text of each encoded-kind field (scores as a dict), as the index
    stores them; `sample_json` is `to_sample_json()` as compact UTF-8 JSON, spliced from the same texts.
    The record must not change while its writers run.
    """

    def __init__(self, record: Record):
        self.record = record
        self.texts = {name: dumps(getattr(record, name)) for name, kind in FIELD_KINDS.items()
                      if kind in ENCODED_KINDS}

    @cached_property
    def sample_json(self) -> bytes:
        record, texts = self.record, self.texts
        parts = []
        for name, kind in FIELD_KINDS.items():
            if kind == SCORES:
                text = dumps(record.aligned_scores())
            else:
                text = texts[name] if name in texts else dumps(getattr(record, name))
            parts.append(f'"{name}":{text}')
        return ("{" + ",".join(parts) + "}").encode("utf-8")


def dumps(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is: the one encoding of record JSON."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
