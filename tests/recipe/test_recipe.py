"""Malformed recipes, vocabularies and side files: one line naming file and field, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tinydata import SMALL_VOCAB

from builder.cli import main
from builder.recipe.model import apply_overrides, load_recipe, recipe_schema


def vocab_with(**changes) -> dict:
    data = json.loads(json.dumps(SMALL_VOCAB))
    data.update(changes)
    return data


def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


# (case name, how to break the recipe, text expected in the one-line error)
CASES = [
    ("unknown top-level field", lambda r, d: r.update(bogus=1), "recipe.yaml: bogus: unknown field"),
    ("unknown nested field", lambda r, d: r["engine"].update(concurency=3), "engine.concurency: unknown field"),
    ("wrong type", lambda r, d: r["output"].update(samples_per_shard="many"), "output.samples_per_shard: Input should be a valid integer"),
    ("threshold above 1", lambda r, d: r.setdefault("tagging", {}).update(threshold=1.5), "tagging.threshold: Input should be less than or equal to 1"),
    ("missing source", lambda r, d: r.pop("source"), "source: required field is missing"),
    ("unknown engine kind", lambda r, d: r["engine"].update(kind="gpu"), "engine.kind: unknown engine 'gpu'; choose one of: auto, sglang, http, transformers, simulated"),
    ("empty formats", lambda r, d: r["output"].update(formats=[]), "output.formats: Value error, at least one format is needed"),
    ("unknown format", lambda r, d: r["output"].update(formats=["tfrecord"]), "output.formats.0: unknown output format 'tfrecord'; choose one of: webdataset, hf"),
    ("unknown strategy", lambda r, d: r.setdefault("tagging", {}).update(strategy="best"), "tagging.strategy: unknown strategy 'best'; choose one of: tagllm, yes-no, all-in-one, open-ended"),
    ("unknown http api", lambda r, d: r["engine"].update(api="grpc"), "engine.api: unknown http api 'grpc'; choose one of: http-sglang, openai, vllm"),
    ("unknown source kind", lambda r, d: r["source"].update(kind="s3"), "source.kind: unknown source kind 's3'; choose one of: folder, hf, webdataset, img2dataset, coco, voc, nuswide, openimages"),
    ("negative concurrency", lambda r, d: r["engine"].update(concurrency=0), "engine.concurrency: Input should be greater than or equal to 1"),
    ("missing vocabulary file", lambda r, d: r.update(vocabulary=str(d / "nope.yaml")), "vocabulary: file not found"),
    ("duplicate label", lambda r, d: r.update(vocabulary=str(_write(d / "v.yaml", vocab_with(groups=[
        {"name": "animal", "labels": [{"name": "cat"}, {"name": "cat"}]}])))),
     "v.yaml: groups: Value error, duplicate label 'cat' in group 'animal'"),
    ("label in two groups", lambda r, d: r.update(vocabulary=str(_write(d / "v.yaml", vocab_with(groups=[
        {"name": "a", "labels": [{"name": "cat"}]}, {"name": "b", "labels": [{"name": "cat"}]}])))),
     "label 'cat' is in two groups ('a' and 'b')"),
    ("empty group", lambda r, d: r.update(vocabulary=str(_write(d / "v.yaml", vocab_with(groups=[
        {"name": "a", "labels": [{"name": "cat"}]}, {"name": "b", "labels": []}])))),
     "v.yaml: groups.1.labels: Value error, group has no labels"),
    ("unknown vocabulary field", lambda r, d: r.update(vocabulary=str(_write(d / "v.yaml", vocab_with(colour="red")))),
     "v.yaml: colour: unknown field"),
    ("inline vocabulary label without name", lambda r, d: r.update(vocabulary={"groups": [{"name": "a", "labels": [{"description": "x"}]}]}),
     "vocabulary: groups.0.labels.0.name: required field is missing"),
    ("missing concept sheet", lambda r, d: r.setdefault("tagging", {}).update(concept_sheet=str(d / "c.yaml")),
     "tagging.concept_sheet: file not found"),
    ("concept sheet names an unknown label", lambda r, d: r.setdefault("tagging", {}).update(
        concept_sheet=str(_write(d / "c.yaml", {"concepts": {"unicorn": {"description": "x"}}}))),
     "c.yaml: concepts.unicorn: not a label of the vocabulary"),
    ("threshold file out of range", lambda r, d: r.setdefault("tagging", {}).update(
        thresholds_file=str(_write(d / "t.yaml", {"thresholds": {"cat": 3}}))),
     "t.yaml: thresholds.cat: must be a number in [0, 1]"),
    ("template syntax error", lambda r, d: r.setdefault("tagging", {}).update(
        stage1_template=str(_write(d / "s1.j2", "Which {{ group }"))), "s1.j2: line 1: template error"),
    ("not a mapping", None, "a recipe must be a YAML mapping"),
    ("broken YAML", None, "not valid YAML"),
]


@pytest.mark.parametrize("name,breaker,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_recipe(name, breaker, expected, write_recipe, tmp_path):
    recipe = write_recipe()
    if breaker is None:
        recipe.write_text("- just\n- a list\n" if name == "not a mapping" else "name: [unclosed\n")
    else:
        data = yaml.safe_load(recipe.read_text())
        breaker(data, tmp_path)
        recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    result = CliRunner().invoke(main, ["build", str(recipe), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0]
    assert not (tmp_path / "out").exists()
    check = CliRunner().invoke(main, ["recipe", "check", str(recipe)])
    assert check.exit_code == 2 and expected in check.output


def test_missing_recipe_file(tmp_path):
    result = CliRunner().invoke(main, ["recipe", "check", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'none.yaml'}: file not found"


def test_bad_set_override(write_recipe):
    result = CliRunner().invoke(main, ["build", str(write_recipe()), "--set", "engine.kind"])
    assert result.exit_code == 2
    assert "expected key.path=value" in result.output


def test_overrides_parse_yaml_values():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=[x, y]", "d.e=true"])
    assert data == {"a": {"b": 2, "c": ["x", "y"]}, "d": {"e": True}}


def test_every_field_has_a_description():
    schema = recipe_schema()
    missing = []
    for name, model in [("Recipe", schema), *schema["$defs"].items()]:
        for field, spec in model.get("properties", {}).items():
            if "description" not in spec:
                missing.append(f"{name}.{field}")
    assert missing == []


def test_relative_paths_follow_the_recipe_file(write_recipe, tmp_path, small_vocab_file):
    recipe = write_recipe(vocabulary=small_vocab_file.name)
    loaded = load_recipe(recipe)
    assert loaded.vocab.names[0] == "cat"


def test_schema_command_prints_json():
    result = CliRunner().invoke(main, ["recipe", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "Recipe"


def test_shipped_recipes_check():
    repo = Path(__file__).resolve().parents[2]
    for name, extra in (("demo.yaml", []), ("coco2014.yaml", ["--no-source"])):  # COCO is not downloaded here
        result = CliRunner().invoke(main, ["recipe", "check", str(repo / "recipes" / name), *extra])
        assert result.exit_code == 0, result.output
