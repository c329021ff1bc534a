"""The strategies: TagLLM and the paper's plain-prompting baselines, all giving the same record.

Requests per image, by definition:
- tagllm:     groups x ensemble (stage 1) + one per candidate (stage 2)
- yes-no:     one per vocabulary label
- all-in-one: one
- open-ended: one
"""

from __future__ import annotations

import re

from builder.engines.base import Request
from builder.method.answers import Ask
from builder.method.base import Outcome, Strategy
from builder.method.candidates import generate_candidates, parse_subset_answer, subset_request
from builder.method.context import TaggingContext
from builder.method.verify import verify_labels
from builder.prompts.constraints import Constraint
from builder.prompts.render import chat
from builder.recipe.kinds import STRATEGIES
from builder.records import Item


class TagLLM(Strategy):
    """Group-wise candidates, then concept-aligned yes/no verification of each candidate."""

    name = "tagllm"

    async def _label(self, item: Item, image: bytes) -> Outcome:
        candidates, stage1 = await generate_candidates(self.ctx, self.asker, image)
        outcome = Outcome(candidates=candidates, answers=stage1)
        if outcome.failure():
            return outcome
        outcome.scores, stage2 = await verify_labels(self.ctx, self.asker, image, candidates)
        outcome.answers += stage2
        outcome.labels = self.keep(outcome.scores)
        return outcome


class YesNo(Strategy):
    """One yes/no question per vocabulary label: the most expensive baseline."""

    name = "yes-no"

    async def _label(self, item: Item, image: bytes) -> Outcome:
        names = list(self.ctx.names)
        scores, answers = await verify_labels(self.ctx, self.asker, image, names)
        return Outcome(candidates=list(names), scores=scores, answers=answers, labels=self.keep(scores))


class AllInOne(Strategy):
    """One constrained request listing the whole vocabulary; no scores beyond chosen / not."""

    name = "all-in-one"

    async def _label(self, item: Item, image: bytes) -> Outcome:
        names = list(self.ctx.names)
        request = subset_request(self.ctx, self.ctx.all_in_one, "all", names, image)
        (answer,) = await self.asker.ask([request], parse_subset_answer)
        outcome = Outcome(answers=[answer])
        if answer.ok:
            outcome.candidates = list(answer.value)
            outcome.labels = list(answer.value)
            outcome.scores = {name: 1.0 for name in answer.value}
        return outcome


_SPLIT = re.compile(r"[,;\n]|\band\b")


def map_free_text(ctx: TaggingContext, text: str) -> tuple[list[str], list[str]]:
    """Free-text object names -> vocabulary labels (names, synonyms, simple plurals) + the unmapped."""
    found: set[str] = set()
    unmapped: list[str] = []
    for raw in _SPLIT.split(text):
        word = raw.strip().strip(".").strip()
        word = re.sub(r"^(a|an|the|some|two|three|several)\s+", "", word, flags=re.I)
        if not word:
            continue
        label = ctx.vocab.resolve(word)
        for variant in (word[:-1], word[:-2]) if label is None and word.lower().endswith("s") else ():
            label = label or ctx.vocab.resolve(variant)
        if label is None:
            unmapped.append(word)
        else:
            found.add(label)
    return [n for n in ctx.names if n in found], unmapped


def free_request(ctx: TaggingContext, image: bytes) -> Request:
    """The open-ended baseline's one question: name the objects, no constraint."""
    messages = ctx.memo("open", lambda: chat(ctx.system, ctx.open_ended.render(labels=ctx.vocab.names)))
    return Request(messages=messages, image=image, constraint=Constraint("free"),
                   max_tokens=ctx.stage1_max_tokens, temperature=ctx.temperature, tag="open")


class OpenEnded(Strategy):
    """A free list of objects, mapped to the vocabulary; what does not map is kept and counted."""

    name = "open-ended"

    async def _label(self, item: Item, image: bytes) -> Outcome:
        (answer,) = await self.asker.ask([free_request(self.ctx, image)], lambda r, res: res.text)
        outcome = Outcome(answers=[answer])
        if answer.ok:
            labels, unmapped = map_free_text(self.ctx, answer.value)
            outcome.candidates = labels
            outcome.labels = labels
            outcome.scores = {name: 1.0 for name in labels}
            outcome.extra = {"unmapped": unmapped}
        return outcome


def make_strategy(name: str, ctx: TaggingContext, asker: Ask, simulated: bool) -> Strategy:
    """The strategy registered as `name` in `recipe.kinds.STRATEGIES`."""
    return STRATEGIES.load(name)(ctx, asker, simulated)
