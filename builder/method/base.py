"""The per-image loop every strategy shares, and the request builders they draw on.

`Strategy.tag` owns the loop: recorded source errors, image preparation, usage accounting and
turning failed answers into a failed record. A strategy fills in one hook, `_label`, which asks
the engine (through the `Ask`) and returns the candidates, scores and final labels.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from builder.engines.base import Request, Result
from builder.images import ImageProblem, prepare_image, sniff_extension
from builder.method.answers import Answer, Ask
from builder.prompts.constraints import Constraint, ParseError, parse_subset, parse_yesno
from builder.prompts.render import Template, chat
from builder.records import Item, Record

if TYPE_CHECKING:
    from builder.recipe.model import LoadedRecipe


class TaggingContext:
    """Vocabulary, concept sheet, thresholds and templates of a recipe, ready to build requests."""

    def __init__(self, loaded: LoadedRecipe):
        spec = loaded.recipe.tagging
        self.loaded = loaded
        self.vocab = loaded.vocab
        self.concepts = loaded.concepts
        self.system = spec.system_prompt
        self.temperature = spec.temperature
        self.stage1_max_tokens = spec.stage1_max_tokens
        self.ensemble = spec.ensemble
        self.stage1 = Template.load(loaded.path(spec.stage1_template), "stage1.j2")
        self.stage1_alt = Template.load(None, "stage1_alt.j2")
        self.stage2 = Template.load(loaded.path(spec.stage2_template), "stage2.j2")
        self.all_in_one = Template.load(None, "all_in_one.j2")
        self.open_ended = Template.load(None, "open_ended.j2")
        self.max_pixels = loaded.recipe.engine.max_pixels
        self.limit_pixels = loaded.recipe.output.max_image_pixels

    def threshold(self, label: str) -> float:
        return self.loaded.threshold(label)

    def subset_request(self, template: Template, group: str, options: list[str], image: bytes,
                       reference: list[str] | None, variant: int = 0) -> Request:
        question = template.render(group=group, options=options)
        return Request(
            messages=chat(self.system, question), image=image,
            constraint=Constraint("subset", tuple(options)),
            max_tokens=max(self.stage1_max_tokens, 16 + 8 * len(options)),
            temperature=self.temperature if variant < 2 else max(self.temperature, 0.7),
            seed=variant or None, reference=reference, tag=f"subset:{group}:{variant}",
        )

    def group_requests(self, image: bytes, reference: list[str] | None) -> list[Request]:
        """Stage 1: one request per group (times the ensemble size), all about the same image."""
        out = []
        for variant in range(self.ensemble):
            template = self.stage1 if variant % 2 == 0 else self.stage1_alt
            for group in self.vocab.groups:
                names = [label.name for label in group.labels]
                out.append(self.subset_request(template, group.name, names, image, reference, variant))
        return out

    def verify_question(self, label: str) -> str:
        concept = self.concepts.concept(self.vocab, label)
        return self.stage2.render(label=label, concept=concept, group=self.vocab.group_of(label))

    def verify_request(self, label: str, image: bytes, reference: list[str] | None) -> Request:
        """Stage 2: a one-token yes/no with the label's concept description, scored by logprobs."""
        return Request(
            messages=chat(self.system, self.verify_question(label)), image=image, constraint=Constraint("yesno"),
            max_tokens=1, temperature=0.0, logprobs=True, reference=reference, tag=f"verify:{label}",
        )

    def free_request(self, image: bytes, reference: list[str] | None) -> Request:
        question = self.open_ended.render(labels=self.vocab.names)
        return Request(messages=chat(self.system, question), image=image, constraint=Constraint("free"),
                       max_tokens=self.stage1_max_tokens, temperature=self.temperature,
                       reference=reference, tag="open")


def parse_subset_answer(request: Request, result: Result) -> list[str]:
    return parse_subset(result.text, request.constraint.options)


def parse_score(request: Request, result: Result) -> float:
    """P(yes) from logprobs when the engine gave them, else 1/0 from the answer text."""
    if result.yes_prob is not None:
        if not 0.0 <= result.yes_prob <= 1.0:
            raise ParseError(f"score {result.yes_prob} outside [0, 1]")
        return float(result.yes_prob)
    return 1.0 if parse_yesno(result.text) else 0.0


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
        ext = (sniff_extension(item.image) or item.ext) if item.image else item.ext  # the real format
        record = Record(key=item.key, status="ok", reference=item.reference, source=item.ref, ext=ext,
                        simulated=self.simulated)
        if item.error:
            return _fail(record, item.error, item.detail or item.error)
        try:
            prepared = await asyncio.to_thread(prepare_image, item.image, self.ctx.max_pixels, self.ctx.limit_pixels)
        except ImageProblem as exc:
            return _fail(record, exc.reason, exc.detail)
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
        return [name for name in self.ctx.vocab.names if name in scores and scores[name] >= self.ctx.threshold(name)]

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
