"""Label vocabulary: labels with descriptions and synonyms, split into semantic groups.

Vocabulary order is the order labels appear in the file; the stage-1 constraint and the
ClassLabel feature both follow it, so the same file always gives the same ids.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from builder.errors import UserError


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Label name as stored in the dataset (unique in the vocabulary).")
    description: str = Field("", description="Short definition shown to the model in verification.")
    synonyms: list[str] = Field(default_factory=list, description="Other words for the label.")

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("label name is empty")
        return v.strip()


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Group name (a semantic super-category, e.g. 'vehicle').")
    labels: list[Label] = Field(description="Labels of this group, in vocabulary order.")

    @field_validator("labels")
    @classmethod
    def _not_empty(cls, v: list[Label]) -> list[Label]:
        if not v:
            raise ValueError("group has no labels")
        return v


class Vocabulary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("vocabulary", description="Vocabulary name, shown in the card.")
    version: str = Field("1", description="Human version tag; the content hash is tracked as well.")
    groups: list[Group] = Field(description="Semantic groups; one stage-1 request per group per image.")

    @field_validator("groups")
    @classmethod
    def _unique(cls, groups: list[Group]) -> list[Group]:
        seen: dict[str, str] = {}
        group_names: set[str] = set()
        for group in groups:
            if group.name in group_names:
                raise ValueError(f"duplicate group {group.name!r}")
            group_names.add(group.name)
            for label in group.labels:
                if label.name in seen:
                    where = seen[label.name]
                    if where == group.name:
                        raise ValueError(f"duplicate label {label.name!r} in group {group.name!r}")
                    raise ValueError(
                        f"label {label.name!r} is in two groups ({where!r} and {group.name!r})"
                    )
                seen[label.name] = group.name
        if not seen:
            raise ValueError("vocabulary has no labels")
        return groups

    @property
    def labels(self) -> list[Label]:
        return [label for group in self.groups for label in group.labels]

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    def label(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(name)

    def group_of(self, name: str) -> str:
        for group in self.groups:
            if any(label.name == name for label in group.labels):
                return group.name
        raise KeyError(name)

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def resolve(self, word: str) -> str | None:
        """Map a name or synonym (any case, '_' or '-' for spaces) to a vocabulary label."""
        key = normalize_word(word)
        return self._lookup().get(key)

    def _lookup(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for label in self.labels:
            for word in [label.name, *label.synonyms]:
                table.setdefault(normalize_word(word), label.name)
        return table

    def digest(self) -> str:
        """Content hash: part of every request-cache key and every record's provenance."""
        blob = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def normalize_word(word: str) -> str:
    text = word.strip().lower().replace("_", " ").replace("-", " ")
    return " ".join(text.split())


def format_validation_error(origin: str, err: ValidationError) -> str:
    """One line naming the file and the first offending field."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "required field is missing"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{origin}: {loc}: {msg}{more}"


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from exc


def vocabulary_from_data(data: Any, origin: str) -> Vocabulary:
    if not isinstance(data, dict):
        raise UserError(f"{origin}: a vocabulary must be a mapping with 'groups'")
    try:
        return Vocabulary.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(origin, exc)) from exc


def load_vocabulary(path: str | Path) -> Vocabulary:
    path = Path(path)
    return vocabulary_from_data(read_yaml(path), str(path))
