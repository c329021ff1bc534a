"""The verification prompt carries the concept sheet; message order keeps the prefix cache useful."""

from __future__ import annotations

from pathlib import Path

import yaml

from builder.method import TaggingContext
from builder.method.candidates import group_requests
from builder.method.verify import verify_question, verify_request
from builder.recipe.concepts import load_concept_sheet
from builder.recipe.model import load_recipe
from builder.recipe.vocab import load_vocabulary

REPO = Path(__file__).resolve().parents[2]
CAT = {
    "description": "A house cat as the annotators meant it.",
    "includes": ["kittens", "a cat seen only by its tail"],
    "excludes": ["lions and tigers", "stuffed toy cats"],
    "confusable": ["dog"],
    "cooccurring": ["bird"],
}


def context(write_recipe, tmp_path: Path, concepts: dict | None) -> TaggingContext:
    tagging = {}
    if concepts is not None:
        sheet = tmp_path / "concepts.yaml"
        sheet.write_text(yaml.safe_dump({"vocabulary": "small", "concepts": concepts}))
        tagging = {"concept_sheet": str(sheet)}
    return TaggingContext(load_recipe(write_recipe(tagging=tagging)))


def test_verification_prompt_uses_the_concept_sheet(write_recipe, tmp_path):
    ctx = context(write_recipe, tmp_path, {"cat": CAT})
    question = verify_question(ctx, "cat")
    assert question.splitlines()[0] == "Is there a cat in this image? Answer yes or no."
    assert 'Definition of "cat": A house cat as the annotators meant it.' in question
    assert "Counts as cat: kittens; a cat seen only by its tail." in question
    assert "Does not count: lions and tigers; stuffed toy cats." in question
    assert "Do not confuse it with: dog." in question
    assert "A domestic cat." not in question  # the sheet replaces the vocabulary description


def test_without_a_sheet_the_vocabulary_description_is_used(write_recipe, tmp_path):
    question = verify_question(context(write_recipe, tmp_path, None), "cat")
    assert 'Definition of "cat": A domestic cat.' in question
    assert "Counts as" not in question and "Does not count" not in question and "confuse" not in question


def test_an_entry_without_description_falls_back_to_the_vocabulary(write_recipe, tmp_path):
    ctx = context(write_recipe, tmp_path, {"dog": {"excludes": ["wolves"]}})
    question = verify_question(ctx, "dog")
    assert 'Definition of "dog": A dog of any breed.' in question
    assert "Does not count: wolves." in question


def test_system_prompt_then_image_then_question(write_recipe, tmp_path):
    ctx = context(write_recipe, tmp_path, {"cat": CAT})
    image = b"\xff\xd8 not really a jpeg"
    verify = verify_request(ctx, "cat", image)
    stage1 = group_requests(ctx, image)
    for request in [verify, *stage1]:
        system, user = request.messages
        assert system == {"role": "system", "content": ctx.system}
        assert [part["type"] for part in user["content"]] == ["image", "text"]
        assert request.image == image
    assert verify.messages[1]["content"][1]["text"] == verify_question(ctx, "cat")
    assert verify.constraint.kind == "yesno" and verify.logprobs and verify.max_tokens == 1


def test_coco80_starter_sheet_fits_the_vocabulary():
    vocab = load_vocabulary(REPO / "recipes/vocab/coco80.yaml")
    sheet = load_concept_sheet(REPO / "recipes/concepts/coco80.yaml")
    sheet.check_against(vocab, "coco80 sheet")  # every confusable / cooccurring is a coco80 label
    assert sheet.vocabulary == "coco80"
    assert list(sheet.concepts) == vocab.names
    for name, concept in sheet.concepts.items():
        assert concept.description and concept.excludes, name
        assert name not in concept.confusable + concept.cooccurring, name


def test_shipped_recipes_verify_with_the_coco80_sheet():
    for recipe in ("demo.yaml", "coco2014.yaml"):
        loaded = load_recipe(REPO / "recipes" / recipe)
        question = verify_question(TaggingContext(loaded), "dining table")
        assert "Counts as dining table:" in question and "close-up food photo" in question, recipe
        cup = verify_question(TaggingContext(loaded), "cup")
        assert "Do not confuse it with: wine glass" in cup, recipe


def test_questions_are_rendered_once_per_sheet_and_again_after_a_swap(write_recipe, tmp_path):
    """The same messages object serves every image; a new concept sheet gives new questions."""
    ctx = context(write_recipe, tmp_path, {"cat": CAT})
    first, second = verify_request(ctx, "cat", b"image one"), verify_request(ctx, "cat", b"image two")
    assert first.messages is second.messages and first.image != second.image
    assert group_requests(ctx, b"x")[0].messages is group_requests(ctx, b"y")[0].messages
    (tmp_path / "other").mkdir()
    other = context(write_recipe, tmp_path / "other", {"cat": {"description": "Only lions."}})
    ctx.concepts = other.concepts
    swapped = verify_request(ctx, "cat", b"image one")
    assert swapped.messages is not first.messages
    assert "Only lions." in swapped.messages[1]["content"][1]["text"]
    assert "Only lions." not in first.messages[1]["content"][1]["text"]
