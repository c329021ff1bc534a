"""The units that flow through a build: a source item in, one output record out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The fixed set of reasons a record can fail with; stats and cards count by these.
FAIL_REASONS = (
    "missing",  # the source names a file that is not there
    "empty",  # zero bytes
    "decode",  # not a readable image (truncated, wrong format, not an image)
    "too_large",  # over the pixel limit (decompression-bomb guard)
    "engine",  # the engine failed after retries (timeouts, 5xx, dead engine)
    "parse",  # the answer never matched the constraint after retries
    "source",  # the source row itself is malformed (no image column, bad label)
)


# Key of `Item.ref` (and so of `Record.source`) listing the vocabulary labels a person checked and found
# absent. Where a record has it, only those labels count as negatives in `tagllm eval`; the labels that are
# neither in `reference` nor here were never checked (Open Images) or are ambiguous (VOC "difficult").
VERIFIED_ABSENT = "verified_absent"


@dataclass
class Item:
    """One source item: a stable key, the original encoded bytes, and where it came from."""

    key: str
    image: bytes | None
    ext: str
    ref: dict[str, Any]
    reference: list[str] | None = None
    error: str | None = None  # a FAIL_REASONS entry when the source could not deliver the item
    detail: str = ""


@dataclass
class Record:
    """Exactly one per source item; what the writers store beside the image."""

    key: str
    status: str  # "ok" or "failed"
    labels: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    reference: list[str] | None = None
    error: str | None = None
    detail: str = ""
    raw: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    ext: str = ""
    width: int | None = None
    height: int | None = None
    usage: dict[str, float] = field(default_factory=dict)
    simulated: bool = False
    review: dict[str, Any] | None = None  # set when a person corrected the labels (machine labels kept here)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "labels": self.labels,
            "scores": self.scores,
            "candidates": self.candidates,
            "reference": self.reference,
            "error": self.error,
            "detail": self.detail,
            "raw": self.raw,
            "source": self.source,
            "ext": self.ext,
            "width": self.width,
            "height": self.height,
            "usage": self.usage,
            "simulated": self.simulated,
            "review": self.review,
        }

    def to_sample_json(self) -> dict[str, Any]:
        """The record as stored beside the image in a WebDataset shard: every field keeps one shape
        across samples (scores as a list aligned with `candidates`), so loaders that infer a schema
        from the first samples (datasets' webdataset builder) lose nothing."""
        data = self.to_json()
        data["scores"] = [self.scores.get(name, 0.0) for name in self.candidates]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        data = dict(data)
        if isinstance(data.get("scores"), list):  # the WebDataset form: aligned with candidates
            data["scores"] = dict(zip(data.get("candidates") or [], data["scores"]))
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
