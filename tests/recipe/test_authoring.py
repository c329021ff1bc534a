"""Issue 13: from a text file of labels to a vocabulary, a concept sheet and a recipe; readable errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from builder.cli import main
from builder.engines.base import Engine, Request, Result
from builder.errors import UserError
from builder.method.authoring import propose_concepts, propose_vocabulary
from builder.recipe.authoring import read_label_list, starter_concepts
from builder.recipe.concepts import load_concept_sheet
from builder.recipe.model import load_recipe
from builder.recipe.vocab import load_vocabulary

LABELS = ["person", "cat", "dog", "bird", "horse", "car", "bicycle", "boat", "apple", "banana", "clock", "chair"]


def run(*args: str, cwd: Path) -> tuple[int, str]:
    import os

    here = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args))
    finally:
        os.chdir(here)
    return result.exit_code, result.output


def test_flat_list_to_vocabulary_concepts_recipe_and_check(tmp_path, photo_folder):
    (tmp_path / "labels.txt").write_text("\n".join(["# my labels", *LABELS, "", "cat"][:-1]) + "\n")
    code, out = run("vocab", "init", "labels.txt", cwd=tmp_path)
    assert code == 0, out
    assert "review before building" in out and "name is read by the model" in out
    vocab = load_vocabulary(tmp_path / "vocab.yaml")
    assert vocab.names == LABELS and [g.name for g in vocab.groups] == ["general"]
    code, out = run("concepts", "init", "vocab.yaml", cwd=tmp_path)
    assert code == 0 and "12 labels have no description" in out
    sheet = load_concept_sheet(tmp_path / "concepts.yaml")
    sheet.check_against(vocab, "concepts.yaml")
    assert set(sheet.concepts) == set(LABELS)
    code, out = run("init", str(photo_folder), "--vocabulary", "vocab.yaml", "--concepts", "concepts.yaml",
                    cwd=tmp_path)
    assert code == 0, out
    text = (tmp_path / "recipe.yaml").read_text()
    assert "path: photos" in text and "concept_sheet: concepts.yaml" in text and str(tmp_path) not in text
    loaded = load_recipe(tmp_path / "recipe.yaml")
    assert loaded.recipe.engine.kind == "simulated"  # the folder has metadata.jsonl
    code, out = run("vocab", "init", "labels.txt", cwd=tmp_path)
    assert code == 2 and "exists; pass --force" in out


def test_label_file_groups_duplicates_and_long_lists(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("animal:\ncat\ndog\nvehicle:\ncar\n")
    assert read_label_list(path) == [("animal", "cat"), ("animal", "dog"), ("vehicle", "car")]
    path.write_text("cat\nCat\n")
    with pytest.raises(UserError, match="line 2: label 'Cat' repeats line 1"):
        read_label_list(path)
    path.write_text("\n".join(f"label {i}" for i in range(30)))
    code, out = run("vocab", "init", "labels.txt", cwd=tmp_path)
    assert code == 0
    assert [len(g.labels) for g in load_vocabulary(tmp_path / "vocab.yaml").groups] == [12, 12, 6]


class JsonEngine(Engine):
    """Answers every request with the next canned JSON text (a stand-in for a served model)."""

    name = "canned"

    def __init__(self, answers: list[str]):
        super().__init__(model="canned", concurrency=1, timeout=5, retries=0)
        self.answers = list(answers)
        self.requests: list[Request] = []

    async def _generate_one(self, request: Request) -> Result:
        self.requests.append(request)
        return Result(text=self.answers.pop(0))


def test_engine_proposes_groups_but_cannot_lose_or_invent_labels():
    answer = {"groups": [
        {"name": "animal", "labels": [{"name": "dog", "description": "A dog.", "synonyms": ["puppy"]},
                                      {"name": "cat", "description": "A cat.", "synonyms": []},
                                      {"name": "unicorn", "description": "invented", "synonyms": []}]},
        {"name": "vehicle", "labels": [{"name": "car", "description": "A car.", "synonyms": ["auto"]}]}]}
    engine = JsonEngine([json.dumps(answer)])
    entries = [(None, n) for n in ("cat", "dog", "car", "clock")]
    vocab = propose_vocabulary(engine, entries, "mine")
    assert engine.requests[0].constraint.kind == "json_schema"
    assert [(g.name, [lb.name for lb in g.labels]) for g in vocab.groups] == [
        ("animal", ["cat", "dog"]), ("vehicle", ["car"]), ("general", ["clock"])]
    assert vocab.label("dog").synonyms == ["puppy"]
    assert propose_vocabulary(JsonEngine(["not json"]), entries, "mine") is None


def test_engine_drafts_concepts_per_group(small_vocab_file):
    vocab = load_vocabulary(small_vocab_file)
    answers = [json.dumps({"concepts": [{"label": "cat", "description": "Cats.", "includes": ["kittens"],
                                         "excludes": ["lions"], "confusable": ["dog", "zebra"]}]}),
               "oops", json.dumps({"concepts": []})]
    sheet, answered = propose_concepts(JsonEngine(answers), vocab, starter_concepts(vocab))
    assert answered == 1
    assert sheet.concepts["cat"].confusable == ["dog"] and sheet.concepts["cat"].excludes == ["lions"]
    assert sheet.concepts["bus"].description == "A bus."  # unanswered: the starter entry


def test_flat_list_vocabulary_says_what_a_vocabulary_is(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("- cat\n- dog\n")
    with pytest.raises(UserError, match="mapping with 'groups'.*tagllm vocab init"):
        load_vocabulary(path)


def test_unknown_field_first_with_closest_name(tmp_path, write_recipe):
    data = yaml.safe_load(write_recipe().read_text())
    data["nmae"] = data.pop("name")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out = run("recipe", "check", str(path), cwd=tmp_path)
    assert code == 2 and out.strip() == f"error: {path}: nmae: unknown field (did you mean 'name'?) (and 1 more)"


@pytest.mark.parametrize("content,expected", [
    (b"name: a\nname: b\n", "line 2 not valid YAML (duplicate key 'name')"),
    (b"name: caf\xe9\n", "not UTF-8 text"),
])
def test_duplicate_keys_and_non_utf8_are_one_line_exit_2(tmp_path, content, expected):
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    code, out = run("recipe", "check", str(path), cwd=tmp_path)
    assert code == 2 and len(out.strip().splitlines()) == 1 and expected in out


def test_engine_from_a_recipe_section_and_refusals(tmp_path, write_recipe):
    from builder.method.authoring import drafting_engine

    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    code, out = run("vocab", "init", "labels.txt", "--out", "draft.yaml", "--engine-from", str(write_recipe()),
                    cwd=tmp_path)
    assert code == 2 and "engine 'simulated' cannot draft text" in out
    assert not (tmp_path / "draft.yaml").exists()  # the refused run wrote nothing
    recipe = write_recipe(engine={"kind": "http", "servers": ["http://127.0.0.1:9"], "model": "m"})
    engine = drafting_engine(load_recipe(recipe).vocab, recipe)
    assert engine.name == "http" and engine.model == "m"
