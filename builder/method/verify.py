"""Stage 2 of TagLLM: concept-aligned yes/no verification, scored by P(yes).

Each candidate gets a one-token yes/no question carrying its concept description; the engine
returns P(yes) from the yes/no token logprobs (`builder.prompts.scoring`). An answer without a
usable score is recorded as `no_score`, never guessed from the text.
"""

from __future__ import annotations

from builder.engines.base import Request, Result
from builder.method.answers import Answer, Ask
from builder.method.context import TaggingContext
from builder.prompts.constraints import Constraint, ParseError, parse_yesno
from builder.prompts.render import chat
from builder.prompts.scoring import NoScore


def verify_question(ctx: TaggingContext, label: str) -> str:
    concept = ctx.concepts.concept(ctx.vocab, label)
    return ctx.stage2.render(label=label, concept=concept, group=ctx.vocab.group_of(label))


def verify_request(ctx: TaggingContext, label: str, image: bytes) -> Request:
    """A one-token yes/no with the label's concept description, scored by logprobs."""
    question = ctx.memo(("verify", label), lambda: Request(
        messages=chat(ctx.system, verify_question(ctx, label)), image=None, constraint=Constraint("yesno"),
        max_tokens=1, temperature=0.0, logprobs=True, tag=f"verify:{label}"))
    return question.about(image)


def parse_score(request: Request, result: Result) -> float:
    """P(yes) from logprobs; a request that asked for logprobs and got none is `no_score`."""
    if result.yes_prob is not None:
        if not 0.0 <= result.yes_prob <= 1.0:
            raise ParseError(f"score {result.yes_prob} outside [0, 1]")
        return float(result.yes_prob)
    if request.logprobs:
        raise NoScore(f"no yes/no logprobs in the answer {result.text[:30]!r}")
    return 1.0 if parse_yesno(result.text) else 0.0


async def verify_labels(ctx: TaggingContext, asker: Ask, image: bytes,
                        labels: list[str]) -> tuple[dict[str, float], list[Answer]]:
    """Score each label with one yes/no request; all requests of the image go out together."""
    answers = await asker.ask([verify_request(ctx, label, image) for label in labels], parse_score)
    scores = {label: a.value for label, a in zip(labels, answers) if a.ok}
    return scores, answers
