"""Stage 1 of TagLLM: group-wise candidate generation under the ordered-subset constraint."""

from __future__ import annotations

from builder.method.answers import Answer, Ask
from builder.method.base import TaggingContext, parse_subset_answer


async def generate_candidates(ctx: TaggingContext, asker: Ask, image: bytes,
                              reference: list[str] | None) -> tuple[list[str], list[Answer]]:
    """Union of every group's answer (and every ensemble variant's), in vocabulary order."""
    answers = await asker.ask(ctx.group_requests(image, reference), parse_subset_answer)
    chosen = {label for a in answers if a.ok for label in a.value}
    return [name for name in ctx.vocab.names if name in chosen], answers
