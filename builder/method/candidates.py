"""Stage 1 of TagLLM: group-wise candidate generation under the ordered-subset constraint.

One request per vocabulary group (times the ensemble size), all about the same image; each answer
must be an ordered subset of its group's labels. The union is the image's candidate set.
"""

from __future__ import annotations

from builder.engines.base import Request, Result
from builder.method.answers import Answer, Ask
from builder.method.context import TaggingContext
from builder.prompts.constraints import Constraint, parse_subset
from builder.prompts.render import Template, chat


def subset_request(ctx: TaggingContext, template: Template, group: str, options: list[str], image: bytes,
                   variant: int = 0) -> Request:
    """One constrained "which of these are visible" request (built once per context, then per image)."""
    key = ("subset", template.origin, group, variant)
    question = ctx.memo(key, lambda: Request(
        messages=chat(ctx.system, template.render(group=group, options=options)), image=None,
        constraint=Constraint("subset", tuple(options)),
        max_tokens=max(ctx.stage1_max_tokens, 16 + 8 * len(options)),
        # ensemble variants differ by prompt, and from the third on by their own seed and sampling
        temperature=ctx.temperature if variant < 2 else max(ctx.temperature, 0.7),
        seed=variant or None, tag=f"subset:{group}:{variant}",
    ))
    return question.about(image)


def group_requests(ctx: TaggingContext, image: bytes) -> list[Request]:
    """Stage 1: one request per group (times the ensemble size), all about the same image."""
    return [question.about(image) for question in ctx.memo("stage1", lambda: _stage1_questions(ctx))]


def _stage1_questions(ctx: TaggingContext) -> list[Request]:
    out = []
    for variant in range(ctx.ensemble):
        template = ctx.stage1 if variant % 2 == 0 else ctx.stage1_alt
        for group in ctx.vocab.groups:
            out.append(subset_request(ctx, template, group.name, [label.name for label in group.labels], b"", variant))
    return out


def parse_subset_answer(request: Request, result: Result) -> list[str]:
    """The labels of one group answer, validated against its options (ParseError otherwise)."""
    return parse_subset(result.text, request.constraint.options)


async def generate_candidates(ctx: TaggingContext, asker: Ask, image: bytes) -> tuple[list[str], list[Answer]]:
    """Union of every group's answer (and every ensemble variant's), in vocabulary order."""
    answers = await asker.ask(group_requests(ctx, image), parse_subset_answer)
    chosen = {label for a in answers if a.ok for label in a.value}
    return [name for name in ctx.names if name in chosen], answers
