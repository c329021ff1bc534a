"""JSON answers: bounded schemas give answer budgets that hold any answer; raw control characters are dropped."""

from __future__ import annotations

import json

import pytest

from builder.method.calibration import revision_request, revision_schema
from builder.prompts.constraints import json_answer, longest_answer


def test_json_answer_accepts_and_drops_raw_control_characters() -> None:
    text = '{"description": "a cat\x16 on\x1b a\ufffd mat", "includes": ["tab\tand\nnewline kept"]}'
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # strict JSON refuses what the grammar backend let through
    assert json_answer(text) == {"description": "a cat on a mat", "includes": ["tab\tand\nnewline kept"]}
    with pytest.raises(json.JSONDecodeError):
        json_answer('{"description": "never closed')


def test_longest_answer_is_the_longest_compact_json_the_schema_allows() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3},
                                               "b": {"type": "array", "maxItems": 2, "items": {"enum": ["xy", "z"]}}}}
    longest = {"a": "abc", "b": ["xy", "xy"]}
    assert longest_answer(schema) == len(json.dumps(longest))
    assert longest_answer({"type": "string"}) is None
    assert longest_answer({"type": "array", "items": {"type": "string", "maxLength": 4}}) is None


def test_the_revision_budget_holds_its_longest_answer() -> None:
    names = ["cat", "dog", "traffic light"]
    request = revision_request("revise", names)
    worst = {"description": "d" * 400, "includes": ["i" * 100] * 8, "excludes": ["e" * 100] * 8,
             "confusable": ["traffic light"] * 8, "cooccurring": ["traffic light"] * 8}
    assert len(json.dumps(worst)) == request.max_tokens == longest_answer(revision_schema(names))
