"""Stage 2 of TagLLM: concept-aligned yes/no verification, scored by P(yes)."""

from __future__ import annotations

from builder.method.answers import Answer, Ask
from builder.method.base import TaggingContext, parse_score


async def verify_labels(ctx: TaggingContext, asker: Ask, image: bytes, labels: list[str],
                        reference: list[str] | None) -> tuple[dict[str, float], list[Answer]]:
    """Score each label with one yes/no request; all requests of the image go out together."""
    requests = [ctx.verify_request(label, image, reference) for label in labels]
    answers = await asker.ask(requests, parse_score)
    scores = {label: a.value for label, a in zip(labels, answers) if a.ok}
    return scores, answers
