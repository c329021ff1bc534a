"""Ask an engine to draft a vocabulary's groups and a concept sheet; fall back to the plain drafts.

One text-only request with a JSON-schema constraint per task. The answer is validated: every input
label appears exactly once (missing ones are kept in a 'general' group, invented ones dropped), so a
weak model can make a draft worse to read but never lose or add a label.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from builder.engines.base import Engine, Request
from builder.engines.registry import engine_from_spec
from builder.errors import UserError
from builder.prompts.constraints import Constraint, json_answer
from builder.recipe.authoring import group_labels
from builder.recipe.concepts import Concept, ConceptSheet
from builder.recipe.kinds import model_engines
from builder.recipe.model import EngineSpec
from builder.recipe.vocab import Group, Label, Vocabulary, format_validation_error, read_yaml

SYSTEM = "You design label vocabularies for image annotation. Answer with JSON only."

GROUPS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"groups": {"type": "array", "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "labels": {"type": "array", "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                               "synonyms": {"type": "array", "items": {"type": "string"}}},
                "required": ["name", "description", "synonyms"]}},
        },
        "required": ["name", "labels"]}}},
    "required": ["groups"],
}

CONCEPTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"concepts": {"type": "array", "items": {
        "type": "object",
        "properties": {"label": {"type": "string"}, "description": {"type": "string"},
                       "includes": {"type": "array", "items": {"type": "string"}},
                       "excludes": {"type": "array", "items": {"type": "string"}},
                       "confusable": {"type": "array", "items": {"type": "string"}}},
        "required": ["label", "description", "includes", "excludes", "confusable"]}}},
    "required": ["concepts"],
}


def drafting_engine(vocab: Vocabulary, recipe: Path | None = None, **options: Any) -> Engine:
    """An engine that can write text: from a recipe's `engine` section, or from options (kind, model, ...)."""
    if recipe is not None:
        data = read_yaml(recipe)
        if not isinstance(data, dict):
            raise UserError(f"{recipe}: a recipe must be a YAML mapping")
        try:
            spec = EngineSpec.model_validate(data.get("engine") or {})
        except ValidationError as exc:
            raise UserError(format_validation_error(f"{recipe}: engine", exc, EngineSpec)) from exc
    else:
        spec = EngineSpec(**{k: v for k, v in options.items() if v is not None})
    if spec.kind not in model_engines():
        raise UserError(f"engine {spec.kind!r} cannot draft text: choose one of {', '.join(model_engines())}")
    return engine_from_spec(spec, vocab)


def _request(prompt: str, schema: dict[str, Any], tag: str, max_tokens: int) -> Request:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": [{"type": "text", "text": prompt}]}]
    return Request(messages=messages, image=None, constraint=Constraint("json_schema", schema=json.dumps(schema)),
                   max_tokens=max_tokens, temperature=0.0, tag=tag)


def _ask(engine: Engine, requests: list[Request]) -> list[dict[str, Any] | None]:
    """All requests in one engine session; None for an answer that failed or is not a JSON object."""

    async def run() -> Any:
        await engine.start()
        try:
            return await engine.generate(requests)
        finally:
            await engine.close()

    out: list[dict[str, Any] | None] = []
    for result in asyncio.run(run()):
        try:
            data = json_answer(result.text) if result.ok else None
        except json.JSONDecodeError:
            data = None
        out.append(data if isinstance(data, dict) else None)
    return out


def groups_prompt(labels: list[str]) -> str:
    return ("Split these image labels into a few semantic groups (at most 12 labels each; look-alike labels in "
            "the same group). Give each group a short singular noun as its name (it is read in the question "
            "'Which of the following <group> objects are visible?'). For each label write a one-sentence "
            "description of what it looks like and up to 4 synonyms. Use every label exactly once, spelled as "
            "given.\nLabels: " + json.dumps(labels, ensure_ascii=False))


def parse_groups(data: dict[str, Any] | None, entries: list[tuple[str | None, str]]) -> list[Group] | None:
    """Groups from the model's answer, holding exactly the input labels in input order per group."""
    if not data or not isinstance(data.get("groups"), list):
        return None
    wanted = [name for _, name in entries]
    placed: dict[str, tuple[str, Label]] = {}
    for group in data["groups"]:
        if not isinstance(group, dict) or not str(group.get("name", "")).strip():
            continue
        for item in group.get("labels") or []:
            name = str(item.get("name", "")).strip() if isinstance(item, dict) else ""
            if name in wanted and name not in placed:
                synonyms = [str(s).strip() for s in item.get("synonyms") or [] if str(s).strip() and s != name]
                placed[name] = (str(group["name"]).strip(), Label(
                    name=name, description=str(item.get("description", "")).strip(),
                    synonyms=list(dict.fromkeys(synonyms))))
    if not placed:
        return None
    by_group: dict[str, list[Label]] = {}
    for name in wanted:
        if name in placed:
            by_group.setdefault(placed[name][0], []).append(placed[name][1])
    groups = [Group(name=g, labels=labels) for g, labels in by_group.items()]
    missing = [(None, name) for name in wanted if name not in placed]
    return groups + group_labels(missing) if missing else groups


def propose_vocabulary(engine: Engine, entries: list[tuple[str | None, str]], name: str) -> Vocabulary | None:
    """The engine's grouped vocabulary, or None when its answer is unusable."""
    request = _request(groups_prompt([n for _, n in entries]), GROUPS_SCHEMA, "vocab-init", 4096)
    groups = parse_groups(_ask(engine, [request])[0], entries)
    return Vocabulary(name=name, version="1", groups=groups) if groups else None


def propose_concepts(engine: Engine, vocab: Vocabulary, base: ConceptSheet) -> tuple[ConceptSheet, int]:
    """One request per group; entries the model answers replace the starter ones. Returns (sheet, answered)."""
    names = set(vocab.names)
    concepts = dict(base.concepts)
    requests = []
    for group in vocab.groups:
        labels = [{"label": lb.name, "description": lb.description} for lb in group.labels]
        prompt = ("For each label of the group '" + group.name + "' write what counts as the label in a photo "
                  "(description), cases that count (includes), cases that do not (excludes) and labels of the "
                  "vocabulary it is mistaken for (confusable, from: " + ", ".join(vocab.names) + ").\nLabels: "
                  + json.dumps(labels, ensure_ascii=False))
        requests.append(_request(prompt, CONCEPTS_SCHEMA, f"concepts-init:{group.name}", 4096))
    answered = 0
    for group, data in zip(vocab.groups, _ask(engine, requests)):
        members = {lb.name for lb in group.labels}
        for item in (data or {}).get("concepts") or []:
            label = str(item.get("label", "")) if isinstance(item, dict) else ""
            if label not in members:
                continue
            concepts[label] = Concept(
                description=str(item.get("description", "")).strip() or concepts[label].description,
                includes=[str(x) for x in item.get("includes") or []],
                excludes=[str(x) for x in item.get("excludes") or []],
                confusable=[x for x in item.get("confusable") or [] if x in names and x != label])
            answered += 1
    return base.model_copy(update={"concepts": concepts}), answered
