"""First drafts a person reviews: a vocabulary from a list of labels, a concept sheet, a recipe.

These are the deterministic versions (no model involved); `builder.method.authoring` asks an engine
for better groups, descriptions and concept entries and falls back to these. Every draft comes with
the list of things a person should look at before building.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from builder.errors import UserError
from builder.recipe.concepts import Concept, ConceptSheet
from builder.recipe.vocab import Group, Label, Vocabulary, normalize_word

MAX_GROUP = 12  # labels per stage-1 question; the paper's COCO groups hold 1 to 10


@dataclass
class Draft:
    """A drafted file's content plus what a person should review in it."""

    text: str
    review: list[str] = field(default_factory=list)


def read_label_list(path: Path) -> list[tuple[str | None, str]]:
    """(group or None, label) from a text file: one label per line, '#' comments, 'name:' opens a group.

    Duplicate labels (ignoring case, '_' and '-') are errors naming both lines.
    """
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    out: list[tuple[str | None, str]] = []
    seen: dict[str, int] = {}
    group: str | None = None
    for number, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip().lstrip("-*").strip()
        if not text:
            continue
        if text.endswith(":"):
            group = text[:-1].strip() or None
            continue
        key = normalize_word(text)
        if key in seen:
            raise UserError(f"{path}: line {number}: label {text!r} repeats line {seen[key]}")
        seen[key] = number
        out.append((group, text))
    if not out:
        raise UserError(f"{path}: no labels (write one label per line)")
    return out


def group_labels(entries: list[tuple[str | None, str]]) -> list[Group]:
    """Groups the file names keep their labels; ungrouped labels go to 'general' in chunks of MAX_GROUP."""
    named: dict[str, list[Label]] = {}
    loose: list[Label] = []
    for group, name in entries:
        (named.setdefault(group, []) if group else loose).append(Label(name=name))
    groups = [Group(name=g, labels=labels) for g, labels in named.items()]
    chunks = [loose[i:i + MAX_GROUP] for i in range(0, len(loose), MAX_GROUP)]
    for i, chunk in enumerate(chunks, 1):
        name = "general" if len(chunks) == 1 else f"general {i}"
        while any(g.name == name for g in groups):
            name += " (more)"
        groups.append(Group(name=name, labels=chunk))
    return groups


def vocabulary_review(vocab: Vocabulary, proposed_by: str) -> list[str]:
    notes = [f"groups were proposed by {proposed_by}: each group is one question per image, and its name is "
             f"read by the model ('Which of the following <group> objects ...'): give groups short, concrete "
             f"names and put look-alike labels in the same group"]
    big = [g.name for g in vocab.groups if len(g.labels) > MAX_GROUP]
    if big:
        notes.append(f"groups over {MAX_GROUP} labels (long option lists are harder to answer): {', '.join(big)}")
    bare = [label.name for label in vocab.labels if not label.description]
    if bare:
        notes.append(f"{len(bare)} labels have no description (the yes/no check shows it): "
                     + ", ".join(bare[:8]) + (" ..." if len(bare) > 8 else ""))
    notes.append("synonyms map the words of your own metadata (and model answers) onto labels")
    return notes


def vocabulary_yaml(vocab: Vocabulary, source: str, proposed_by: str) -> str:
    header = (f"# Vocabulary drafted by `tagllm vocab init` from {source} ({proposed_by}).\n"
              "# Groups: one stage-1 question per group and image; the group name appears in that question.\n"
              "# Labels: name (stored in the dataset), description (shown in the yes/no check), synonyms.\n"
              "# Label order here is the order of label ids in the dataset. Review, then reference it from a recipe.\n")
    lines = [f"name: {_flow(vocab.name)}", f"version: {_flow(vocab.version)}", "groups:"]
    for group in vocab.groups:
        lines += [f"  - name: {_flow(group.name)}", "    labels:"]
        lines += [f"      - {_flow(label.model_dump(mode='json'))}" for label in group.labels]
    return header + "\n".join(lines) + "\n"


def _flow(value: object) -> str:
    """One-line YAML (a label per line, as in recipes/vocab/coco80.yaml)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000, sort_keys=False)
    return text.strip().removesuffix("\n...").strip()


def draft_vocabulary(path: Path, name: str | None = None) -> tuple[Vocabulary, Draft]:
    """A grouped vocabulary from a label list, without any model."""
    entries = read_label_list(path)
    vocab = Vocabulary(name=name or path.stem, version="1", groups=group_labels(entries))
    how = "the file's own group headings" if all(g for g, _ in entries) else "file order (no model)"
    return vocab, Draft(vocabulary_yaml(vocab, path.name, how), vocabulary_review(vocab, how))


def starter_concepts(vocab: Vocabulary) -> ConceptSheet:
    """One entry per label: the vocabulary's description, synonyms as includes, the rest left to fill."""
    concepts = {label.name: Concept(description=label.description,
                                    includes=[f"anything called {s!r}" for s in label.synonyms])
                for label in vocab.labels}
    return ConceptSheet(vocabulary=vocab.name, version="1", concepts=concepts,
                        provenance={"written_by": "tagllm concepts init (starter, no model)"})


def concepts_review(sheet: ConceptSheet, proposed_by: str) -> list[str]:
    empty = [k for k, c in sheet.concepts.items() if not c.description]
    notes = [f"entries were written by {proposed_by}; the yes/no check shows description, includes, excludes "
             "and confusable for each label, so say what counts and what does not for YOUR annotation rules",
             "confusable names labels the model mixes up (they are warned against in the question)",
             "`tagllm calibrate RECIPE --dev N` revises entries on a few human-labeled images"]
    if empty:
        notes.insert(0, f"{len(empty)} labels have no description yet: " + ", ".join(empty[:8])
                     + (" ..." if len(empty) > 8 else ""))
    return notes


def concepts_yaml(sheet: ConceptSheet, vocab_file: str) -> str:
    header = (f"# Concept sheet for {vocab_file}, drafted by `tagllm concepts init`.\n"
              "# Per label: description, includes (cases that count), excludes (cases that do not),\n"
              "# confusable (labels it is mistaken for), cooccurring (labels often seen with it),\n"
              "# optional threshold. Set tagging.concept_sheet in the recipe to use it.\n")
    data = sheet.model_dump(mode="json", exclude_none=True)
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


RECIPE_TEMPLATE = """\
# Starter recipe written by `tagllm init` for {folder_note}.
# Check it with `tagllm recipe check {recipe_name}`; every field: `tagllm recipe schema`.
name: {name}
source:
  kind: folder
  path: {path}                 # relative to this file
{metadata_line}
vocabulary: {vocabulary}       # groups of labels; `tagllm vocab init LABELS.txt` drafts one
engine:
  # simulated answers from human labels (metadata) plus noise: a dry run, never model quality.
  # A real model: kind: sglang (GPU, pip install -e '.[sglang]') with model: Qwen/Qwen2.5-VL-7B-Instruct,
  # or kind: http with servers: [http://HOST:30000] and api: http-sglang | openai | vllm.
  kind: {engine}
tagging:
  strategy: tagllm
  threshold: 0.5
{concepts_line}
output:
  dir: out/{name}
  formats: [webdataset, hf]
card:
  license: other                 # the license of your images and labels (Hub license id)
"""


def draft_recipe(folder: Path, recipe_path: Path, vocabulary: Path | None, concepts: Path | None) -> Draft:
    """A commented starter recipe for an image folder; paths are written relative to the recipe."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    base = recipe_path.resolve().parent

    def rel(p: Path) -> str:
        return os.path.relpath(p.resolve(), base)

    metadata = next((folder / n for n in ("metadata.jsonl", "metadata.csv") if (folder / n).is_file()), None)
    review = []
    if metadata is None:
        review.append("no metadata.jsonl/.csv in the folder: no human labels, so use a real engine "
                      "(the simulated engine needs labels)")
    if vocabulary is None:
        review.append("vocabulary: vocab.yaml does not exist yet: run `tagllm vocab init LABELS.txt --out vocab.yaml`")
    text = RECIPE_TEMPLATE.format(
        folder_note=folder.name, recipe_name=recipe_path.name,
        name="".join(c if c.isalnum() or c in "-_" else "-" for c in folder.resolve().name.lower()) or "my-tags",
        path=rel(folder),
        metadata_line=f"  metadata: {os.path.relpath(metadata.resolve(), folder.resolve())}  # relative to path"
        if metadata else "  # metadata: metadata.jsonl      # human labels, if any (file_name + labels)",
        vocabulary=rel(vocabulary) if vocabulary else "vocab.yaml",
        engine="simulated" if metadata else "sglang",
        concepts_line=f"  concept_sheet: {rel(concepts)}" if concepts
        else "  # concept_sheet: concepts.yaml  # `tagllm concepts init vocab.yaml` drafts one",
    )
    review.append("card.license: say under which license the images and labels may be shared")
    return Draft(text, review)
