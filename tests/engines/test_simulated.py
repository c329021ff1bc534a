"""The simulated engine gets human labels through its own side channel, never on a request."""

from __future__ import annotations

import asyncio
import dataclasses

from builder.engines.base import Request
from builder.engines.simulated import NoiseModel, SimulatedEngine
from builder.prompts.constraints import Constraint, parse_subset
from builder.prompts.render import chat
from builder.recipe.vocab import vocabulary_from_data

VOCAB = vocabulary_from_data({"groups": [{"name": "animal", "labels": [{"name": "cat"}, {"name": "dog"}]}]}, "t")
EXACT = NoiseModel(miss_rate=0, confusion_rate=0, false_positive_rate=0, flip_rate=0)


def test_requests_carry_no_reference_labels() -> None:
    assert "reference" not in {f.name for f in dataclasses.fields(Request)}


def test_labels_reach_the_simulated_engine_by_image_digest() -> None:
    engine = SimulatedEngine(vocab=VOCAB, noise=EXACT)
    request = Request(chat("s", "Which animal?"), b"image-a", Constraint("subset", ("cat", "dog")))

    def ask(image: bytes) -> list[str]:
        result = asyncio.run(engine.generate([dataclasses.replace(request, image=image)]))[0]
        return parse_subset(result.text, ("cat", "dog"))

    assert ask(b"image-a") == []  # nothing learnt yet: an unlabeled image
    engine.learn_reference(b"image-a", ["dog"])
    engine.learn_reference(b"image-b", ["cat", "dog"])
    assert ask(b"image-a") == ["dog"] and ask(b"image-b") == ["cat", "dog"]
