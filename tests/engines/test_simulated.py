"""The simulated engine is handed human labels by image digest when it is built, never on a request,
and its yes/no scores come out of the one scoring function, from the logprobs its model gives."""

from __future__ import annotations

import asyncio
import dataclasses

from builder.engines import simulated
from builder.engines.base import Request
from builder.engines.simulated import SIM_IDS, NoiseModel, SimulatedEngine
from builder.images import image_digest
from builder.prompts.constraints import Constraint, parse_subset
from builder.prompts.render import chat
from builder.prompts.scoring import yes_probability
from builder.recipe.vocab import vocabulary_from_data

VOCAB = vocabulary_from_data({"groups": [{"name": "animal", "labels": [{"name": "cat"}, {"name": "dog"}]}]}, "t")
EXACT = NoiseModel(miss_rate=0, confusion_rate=0, false_positive_rate=0, flip_rate=0)
QUESTION = Request(chat("s", "Which animal?"), b"", Constraint("subset", ("cat", "dog")))


def ask(engine: SimulatedEngine, image: bytes) -> list[str]:
    async def go():
        async with engine:
            return await engine.generate([dataclasses.replace(QUESTION, image=image)])

    return parse_subset(asyncio.run(go())[0].text, ("cat", "dog"))


def test_requests_carry_no_reference_labels() -> None:
    assert "reference" not in {f.name for f in dataclasses.fields(Request)}


def test_labels_reach_the_simulated_engine_by_image_digest() -> None:
    references = {image_digest(b"image-a"): ["dog"], image_digest(b"image-b"): ["cat", "dog"]}
    engine = SimulatedEngine(vocab=VOCAB, noise=EXACT, references=references)
    assert ask(engine, b"image-c") == []  # not in the table: answered as an unlabeled image
    assert ask(engine, b"image-a") == ["dog"] and ask(engine, b"image-b") == ["cat", "dog"]


def test_a_table_maker_runs_once_at_the_first_start() -> None:
    made = []

    def make() -> dict[str, list[str] | None]:
        made.append(1)
        return {image_digest(b"image-a"): ["cat"]}

    engine = SimulatedEngine(vocab=VOCAB, noise=EXACT, references=make)
    assert made == []  # building the engine (a recipe check) reads no images
    assert ask(engine, b"image-a") == ["cat"]
    assert ask(engine, b"image-a") == ["cat"] and made == [1]  # a restart keeps the table


def test_scores_come_from_the_model_logprobs_through_the_one_scoring_function(monkeypatch) -> None:
    scored = []

    def spy(logprobs, ids, floor=None):
        score = yes_probability(logprobs, ids, floor)
        scored.append((dict(logprobs), ids, score))
        return score

    monkeypatch.setattr(simulated, "yes_probability", spy)
    image = b"image-a"
    engine = SimulatedEngine(vocab=VOCAB, noise=EXACT, references={image_digest(image): ["dog"]})
    request = Request(chat("s", "Is there a dog in this image?"), image, Constraint("yesno"), max_tokens=1,
                      logprobs=True)
    answer = engine.sim.answer(image, request.prompt_text(), "Is there a dog in this image?", request.constraint,
                               ["dog"], True)
    assert answer.yes_prob is None and set(answer.extra["logprobs"]) == {simulated.YES_ID, simulated.NO_ID}
    (result,) = asyncio.run(engine.generate([request]))
    ((logprobs, ids, score),) = scored
    assert ids == SIM_IDS and logprobs == answer.extra["logprobs"]
    assert result.yes_prob == score.p_yes and result.yes_prob > 0.5 and "logprobs" not in result.extra
