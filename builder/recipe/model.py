"""Recipe: the YAML that fully describes a build, validated (sections in `recipe.sections`) and loaded.

Relative paths in a recipe are resolved against the recipe file's folder, so a recipe and its
vocabulary travel together. `--set a.b=value` overrides any field before validation.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import Field, ValidationError, model_validator

from builder import storage
from builder.errors import UserError
from builder.recipe.concepts import ConceptSheet, load_concept_sheet
from builder.recipe.sections import (
    CardSpec,
    CostSpec,
    EngineSpec,
    HubSpec,
    OutputSpec,
    SourceSpec,
    Strict,
    TaggingSpec,
)
from builder.recipe.vocab import Vocabulary, format_validation_error, load_vocabulary, read_yaml, vocabulary_from_data


class Recipe(Strict):
    name: str = Field(description="Dataset name (used for the card title and default repo name).")
    description: str = Field("", description="What this dataset is for.")
    source: SourceSpec = Field(description="Where the images (and any human labels) come from.")
    vocabulary: str | Vocabulary = Field(description="Vocabulary YAML file, or the vocabulary inline.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="Which MLLM backend answers.")
    tagging: TaggingSpec = Field(default_factory=TaggingSpec, description="Strategy, prompts and thresholds.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="What to write and where.")
    card: CardSpec = Field(default_factory=CardSpec, description="Dataset card content.")
    hub: HubSpec = Field(default_factory=HubSpec, description="Where `tagllm push` publishes.")
    cost: CostSpec = Field(default_factory=CostSpec, description="Prices for the cost report.")

    @model_validator(mode="after")
    def _name(self) -> Recipe:
        if not self.name.strip():
            raise ValueError("name is empty")
        return self


def read_thresholds_file(path: Path) -> Any:
    """A thresholds YAML/JSON: a `thresholds:` mapping (as `tagllm eval --tune` writes) or a bare one."""
    data = read_yaml(path)
    return data["thresholds"] if isinstance(data, dict) and "thresholds" in data else data


def check_thresholds(data: Any, vocab: Vocabulary, where: str) -> dict[str, float]:
    """Validate label -> threshold; errors name `where` and the label."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: thresholds: expected a mapping label -> threshold")
    unknown = sorted(set(data) - set(vocab.names))
    if unknown:
        raise UserError(f"{where}: thresholds: not labels of the vocabulary: {', '.join(map(str, unknown[:5]))}")
    for label, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise UserError(f"{where}: thresholds.{label}: must be a number in [0, 1]")
    return {label: float(value) for label, value in data.items()}


class LoadedRecipe:
    """A validated recipe plus the files it points to, resolved and loaded."""

    def __init__(self, recipe: Recipe, base_dir: Path, origin: str):
        self.recipe = recipe
        self.base_dir = base_dir
        self.origin = origin
        self.vocab = self._load_vocab()
        self.concepts = self._load_concepts()
        self.thresholds = self._load_thresholds()

    def path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def _load_vocab(self) -> Vocabulary:
        v = self.recipe.vocabulary
        if isinstance(v, Vocabulary):
            return v
        path = self.path(v)
        if not path.is_file():
            raise UserError(f"{self.origin}: vocabulary: file not found: {path}")
        return load_vocabulary(path)

    def _load_concepts(self) -> ConceptSheet:
        name = self.recipe.tagging.concept_sheet
        if not name:
            return ConceptSheet(vocabulary=self.vocab.name)
        path = self.path(name)
        if not path.is_file():
            raise UserError(f"{self.origin}: tagging.concept_sheet: file not found: {path}")
        sheet = load_concept_sheet(path)
        sheet.check_against(self.vocab, str(path))
        return sheet

    def _load_thresholds(self) -> dict[str, float]:
        """Per-label thresholds: concept sheet entries, then the thresholds file (which wins)."""
        out = {k: c.threshold for k, c in self.concepts.concepts.items() if c.threshold is not None}
        name = self.recipe.tagging.thresholds_file
        if name:
            path = self.path(name)
            out.update(check_thresholds(read_thresholds_file(path), self.vocab, str(path)))
        return out

    def threshold(self, label: str) -> float:
        return self.thresholds.get(label, self.recipe.tagging.threshold)

    def resolved(self) -> dict[str, Any]:
        """The recipe with the vocabulary inline and existing paths absolute (for identity, not for publishing).

        API keys are never in a recipe: only the name of the variable that holds one.
        """
        data = self.recipe.model_dump(mode="json")
        data["vocabulary"] = self.vocab.model_dump(mode="json")
        for section, key in PATH_FIELDS:
            value = data[section].get(key)
            p = None if value is None or storage.is_url(value) else self.path(value)  # URLs stay as written
            if p is not None and p.exists():
                data[section][key] = str(p.resolve())
        return data

    def portable(self, folder: Path) -> dict[str, Any]:
        """The recipe as saved into a dataset `folder`: paths relative to that folder, URL credentials removed.

        Everything in it may be published: no absolute local paths, no user:password@ in server URLs.
        """
        data = self.resolved()
        for section, key in PATH_FIELDS:
            value = data[section].get(key)
            if value and storage.is_url(value):
                data[section][key] = redact_url(value)
            elif value and Path(value).is_absolute():
                data[section][key] = os.path.relpath(value, Path(folder).resolve())
        data["engine"]["servers"] = [redact_url(u) for u in data["engine"]["servers"]]
        data["output"]["dir"] = f"out/{self.recipe.name}"
        return data

    def identity(self) -> dict[str, Any]:
        """Everything that changes the labels (not output location, card text, limit or concurrency)."""
        data = self.resolved()
        for k in ("output", "card", "hub", "cost"):
            data.pop(k, None)
        data["source"].pop("limit", None)
        data["tagging"].pop("concept_sheet", None)
        data["engine"].pop("concurrency", None)
        data["engine"].pop("servers", None)
        data["concepts"] = self.concepts.digest()
        data["thresholds"] = self.thresholds
        return data

    def digest(self) -> str:
        """Hash of `identity()`: a rerun into the same folder must have the same one."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


PATH_FIELDS = (("source", "path"), ("source", "annotations"), ("source", "classes"), ("tagging", "stage1_template"),
               ("tagging", "stage2_template"), ("tagging", "thresholds_file"))


def redact_url(url: str) -> str:
    """http://user:secret@host:port/x -> http://host:port/x (credentials never leave the machine)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two nested dicts (lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "(recipe)"]


def apply_overrides(data: dict[str, Any], overrides: list[str], origin: str = "--set") -> dict[str, Any]:
    """`a.b.c=value` pairs; values parse as YAML (so numbers, booleans and lists work)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{origin}: {item!r}: expected key.path=value")
        key, _, raw = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise UserError(f"{origin}: {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise UserError(f"{origin}: {key}: {part!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def recipe_from_data(data: Any, origin: str, base_dir: Path) -> LoadedRecipe:
    if not isinstance(data, dict):
        raise UserError(f"{origin}: a recipe must be a YAML mapping")
    if isinstance(data.get("vocabulary"), dict):
        vocabulary_from_data(data["vocabulary"], f"{origin}: vocabulary")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(origin, exc, Recipe)) from exc
    return LoadedRecipe(recipe, base_dir, origin)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> LoadedRecipe:
    path = Path(path)
    data = read_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            raise UserError(f"{path}: a recipe must be a YAML mapping")
        data = apply_overrides(data, overrides)
    return recipe_from_data(data, str(path), path.resolve().parent)


def recipe_schema() -> dict[str, Any]:
    return Recipe.model_json_schema()
