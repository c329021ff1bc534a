"""The per-image loop every strategy shares.

`Strategy.tag` owns the loop: recorded source errors, image preparation, usage accounting and
turning failed answers into a failed record. A strategy fills in one hook, `_label`, which asks
the engine (through the `Ask`, with requests built by `candidates` / `verify`) and returns the
candidates, scores and final labels. Shared state lives in `TaggingContext` (`method.context`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from builder.images import ImageProblem, sniff_extension
from builder.images.pool import decode_pool
from builder.method.answers import Answer, Ask
from builder.method.context import TaggingContext
from builder.records import Item, Record

__all__ = ["Outcome", "Strategy", "TaggingContext"]


@dataclass
class Outcome:
    """What a strategy decided for one image (or why it could not)."""

    labels: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def failure(self) -> Answer | None:
        return next((a for a in self.answers if not a.ok), None)


class Strategy(ABC):
    name = "strategy"

    def __init__(self, ctx: TaggingContext, asker: Ask, simulated: bool):
        self.ctx = ctx
        self.asker = asker
        self.simulated = simulated

    async def tag(self, item: Item) -> Record:
        record = Record(key=item.key, status="ok", reference=item.reference, source=item.ref, ext=item.ext,
                        simulated=self.simulated, caption=item.caption, url=item.url,
                        original_width=item.original_width, original_height=item.original_height)
        if item.error:
            record.ext = (sniff_extension(item.image) if item.image else None) or item.ext
            return _fail(record, item.error, item.detail or item.error)
        try:
            pool = decode_pool(self.ctx.decode_budget)
            prepared = await pool.prepare(item.image, self.ctx.max_pixels, self.ctx.limit_pixels)
        except ImageProblem as exc:
            record.ext = (sniff_extension(item.image) if item.image else None) or item.ext
            return _fail(record, exc.reason, exc.detail)
        record.ext = prepared.ext or item.ext  # the real format, read in the decode thread
        record.width, record.height = prepared.width, prepared.height
        outcome = await self._label(item, prepared.data)
        record.raw = [_raw(a) for a in outcome.answers]
        record.usage = _usage(outcome.answers)
        record.candidates = outcome.candidates
        failed = outcome.failure()
        if failed is not None:
            return _fail(record, failed.reason or "engine", f"{failed.request.tag}: {failed.result.error}")
        record.scores = {k: round(v, 6) for k, v in outcome.scores.items()}
        record.labels = outcome.labels
        if outcome.extra:
            record.raw.append({"tag": "extra", **outcome.extra})
        return record

    def keep(self, scores: dict[str, float]) -> list[str]:
        """Final labels: scored labels at or above their threshold, in vocabulary order."""
        return [name for name in self.ctx.names if name in scores and scores[name] >= self.ctx.threshold(name)]

    @abstractmethod
    async def _label(self, item: Item, image: bytes) -> Outcome:
        """Ask the engine about one prepared image."""


def _fail(record: Record, reason: str, detail: str) -> Record:
    record.status = "failed"
    record.error = reason
    record.detail = detail
    record.labels = []
    record.scores = {}
    return record


def _raw(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"tag": answer.request.tag, "text": answer.result.text}
    if answer.result.yes_prob is not None:
        out["yes_prob"] = answer.result.yes_prob
    if answer.result.error:
        out["error"] = answer.result.error
    if answer.cached:
        out["cached"] = True
    if answer.sampled:
        out["sampled"] = True  # a re-ask at another temperature/seed, after identical re-asks failed
    if "score_bound" in answer.result.extra:
        out["score_bound"] = True
    return out


def _usage(answers: list[Answer]) -> dict[str, float]:
    usage = {"requests": len(answers), "cached": 0, "prompt_tokens": 0, "cached_tokens": 0,
             "completion_tokens": 0, "engine_seconds": 0.0, "gpu_seconds": 0.0, "replayed_gpu_seconds": 0.0,
             "unmeasured": 0}
    for a in answers:
        # Cached answers carry what they cost when first answered: the cost stays the labels' cost.
        usage["cached"] += int(a.cached)
        usage["gpu_seconds"] += a.result.gpu_seconds
        usage["replayed_gpu_seconds"] += a.result.gpu_seconds if a.cached else 0.0
        usage["unmeasured"] += int(a.result.gpus == 0)  # cached by a version that did not record it
        usage["prompt_tokens"] += a.result.prompt_tokens
        usage["cached_tokens"] += a.result.cached_tokens
        usage["completion_tokens"] += a.result.completion_tokens
        usage["engine_seconds"] += a.result.latency
    for key in ("engine_seconds", "gpu_seconds", "replayed_gpu_seconds"):
        usage[key] = round(usage[key], 6)
    return usage
