"""The four strategies on a small build: same record format, requests per image exactly as defined."""

from __future__ import annotations

import json

import pytest
from tinydata import SMALL_VOCAB

from builder.method import TaggingContext
from builder.method.strategies import map_free_text
from builder.publish import layout
from builder.recipe.model import load_recipe

NAMES = [label["name"] for g in SMALL_VOCAB["groups"] for label in g["labels"]]
GROUPS = [g["name"] for g in SMALL_VOCAB["groups"]]


def records_for(build, write_recipe, strategy: str, **tagging):
    name = "-".join([strategy, *(f"{k}{v}" for k, v in tagging.items())])
    recipe = write_recipe(f"{name}.yaml", tagging={"strategy": strategy, **tagging},
                          output={"dir": str(write_recipe("x.yaml").parent / "out" / name), "samples_per_shard": 5})
    result = build(recipe)
    records = list(layout.iter_records(result.out))
    assert len(records) == 12 and all(r.status == "ok" for r in records)
    return records


def tags(record) -> list[str]:
    return [raw["tag"] for raw in record.raw if raw["tag"] != "extra"]


def test_tagllm_asks_every_group_then_each_candidate(build, write_recipe):
    for r in records_for(build, write_recipe, "tagllm"):
        assert r.usage["requests"] == len(GROUPS) * 1 + len(r.candidates)
        assert tags(r) == [f"subset:{g}:0" for g in GROUPS] + [f"verify:{c}" for c in r.candidates]
        assert set(r.scores) == set(r.candidates) and set(r.labels) <= set(r.candidates)
        assert r.labels == [n for n in NAMES if n in r.scores and r.scores[n] >= 0.5]


def test_yes_no_asks_once_per_label(build, write_recipe):
    for r in records_for(build, write_recipe, "yes-no"):
        assert r.usage["requests"] == len(NAMES)
        assert tags(r) == [f"verify:{n}" for n in NAMES]
        assert set(r.scores) == set(NAMES)


def test_all_in_one_is_one_constrained_request(build, write_recipe):
    for r in records_for(build, write_recipe, "all-in-one"):
        assert r.usage["requests"] == 1
        assert tags(r) == ["subset:all:0"]
        assert r.labels == r.candidates and all(s == 1.0 for s in r.scores.values())


def test_open_ended_is_one_free_request_with_unmapped_kept(build, write_recipe):
    records = records_for(build, write_recipe, "open-ended")
    for r in records:
        assert r.usage["requests"] == 1
        assert tags(r) == ["open"]
        extra = [raw for raw in r.raw if raw["tag"] == "extra"]
        assert len(extra) == 1 and isinstance(extra[0]["unmapped"], list)
        assert set(r.labels) <= set(NAMES)


def test_ensemble_unites_candidates_of_every_variant(build, write_recipe):
    single = {r.key: r for r in records_for(build, write_recipe, "tagllm")}
    ensembled = records_for(build, write_recipe, "tagllm", ensemble=3)
    grew = 0
    for r in ensembled:
        assert r.usage["requests"] == len(GROUPS) * 3 + len(r.candidates)
        stage1 = [raw for raw in r.raw if raw["tag"].startswith("subset:")]
        assert sorted(raw["tag"] for raw in stage1) == sorted(f"subset:{g}:{v}" for g in GROUPS for v in range(3))
        union = {label for raw in stage1 for label in json.loads(raw["text"])["labels"]}
        assert r.candidates == [n for n in NAMES if n in union]
        assert set(single[r.key].candidates) <= set(r.candidates)  # variant 0 is the single run's question
        grew += len(r.candidates) > len(single[r.key].candidates)
    assert grew > 0, "the other variants never added a candidate"


@pytest.mark.parametrize("text, labels, unmapped", [
    ("two kittens, a puppy and the Hot-Dogs.", ["cat", "dog", "hot dog"], []),
    ("cars; buses\napples, shadow", ["car", "bus", "apple"], ["shadow"]),
    ("Cat, cat, CAT", ["cat"], []),
    ("a unicorn and some birds", ["bird"], ["unicorn"]),
    ("", [], []),
])
def test_open_ended_maps_synonyms_and_plurals(write_recipe, text, labels, unmapped):
    ctx = TaggingContext(load_recipe(write_recipe()))
    assert map_free_text(ctx, text) == (labels, unmapped)
