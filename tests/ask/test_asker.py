"""The re-ask policy: faults cost retries (identical requests), never different answers."""

from __future__ import annotations

import asyncio

from builder.ask.asker import Asker
from builder.engines.base import Engine, Request, Result
from builder.method.candidates import parse_subset_answer
from builder.method.verify import parse_score
from builder.prompts.constraints import Constraint


class Scripted(Engine):
    """Answers from a script, one per call, and keeps every request it was sent."""

    def __init__(self, answers: list[Result]):
        super().__init__(model="scripted", retries=0)
        self.answers = answers
        self.sent: list[Request] = []

    async def _generate_one(self, request: Request) -> Result:
        self.sent.append(request)
        return self.answers.pop(0)


def subset() -> Request:
    return Request([{"role": "user", "content": "q"}], b"img", Constraint("subset", ("a", "b")), tag="s")


def ask(engine: Engine, request: Request, parse, **kwargs):
    return asyncio.run(Asker(engine, None, "v", **kwargs).ask([request], parse))[0]


def test_a_malformed_answer_is_reasked_with_the_identical_request() -> None:
    engine = Scripted([Result(text=""), Result(text='{"labels":["z"]}'), Result(text='{"labels":["b"]}')])
    answer = ask(engine, subset(), parse_subset_answer)
    assert answer.ok and answer.value == ["b"] and not answer.sampled
    assert len(engine.sent) == 3
    assert all(r == engine.sent[0] for r in engine.sent), "re-asks must not change seed or temperature"
    assert engine.sent[0].seed is None  # no seed unless the recipe sets one


def test_after_the_identical_reasks_it_fails_as_parse_unless_sampling_is_allowed() -> None:
    def bad() -> list[Result]:
        return [Result(text="nope") for _ in range(3)]

    assert ask(Scripted(bad()), subset(), parse_subset_answer).reason == "parse"
    engine = Scripted([*bad(), Result(text='{"labels":["a"]}')])
    answer = ask(engine, subset(), parse_subset_answer, sampled_reask=True)
    assert answer.ok and answer.sampled and answer.value == ["a"]
    assert engine.sent[-1].temperature == 0.7 and engine.sent[-1].seed is not None
    assert all(r == engine.sent[0] for r in engine.sent[:3])


def test_a_yes_no_answer_without_logprobs_is_no_score_and_not_reasked() -> None:
    request = Request([{"role": "user", "content": "q"}], b"img", Constraint("yesno"), max_tokens=1, logprobs=True)
    engine = Scripted([Result(text=" of")])
    answer = ask(engine, request, parse_score)
    assert answer.reason == "no_score" and len(engine.sent) == 1
    scored = ask(Scripted([Result(text="yes", yes_prob=0.8)]), request, parse_score)
    assert scored.ok and scored.value == 0.8
