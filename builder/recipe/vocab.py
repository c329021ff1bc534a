"""Label vocabulary: labels with descriptions and synonyms, split into semantic groups.

Vocabulary order is the order labels appear in the file; the stage-1 constraint and the
ClassLabel feature both follow it, so the same file always gives the same ids.
"""

from __future__ import annotations

import difflib
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


def format_validation_error(origin: str, err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line naming the file and the first offending field.

    An unknown field comes first (a misspelled name also makes the real one 'missing'), with the
    closest valid name when `model` is given.
    """
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
        guess = closest_field(model, first["loc"]) if model is not None else None
        if guess:
            msg += f" (did you mean {guess!r}?)"
    elif first["type"] == "missing":
        msg = "required field is missing"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{origin}: {loc}: {msg}{more}"


def closest_field(model: type[BaseModel], loc: tuple) -> str | None:
    """The valid field name nearest to the unknown last part of `loc` (walks nested models)."""
    for part in loc[:-1]:
        if isinstance(part, int):  # a list index: the list's item model is already chosen
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = _model_of(field.annotation)
        if inner is None:
            return None
        model = inner
    match = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return match[0] if match else None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when built with it
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last silently)."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; bad encoding, bad syntax and duplicate keys become one-line UserErrors."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from exc


VOCAB_HINT = ("a vocabulary is a mapping with 'groups', each a name and its labels "
              "(README: 'Your own photos and labels'); `tagllm vocab init LABELS.txt` makes one from a list of labels")


def vocabulary_from_data(data: Any, origin: str) -> Vocabulary:
    if not isinstance(data, dict):
        raise UserError(f"{origin}: {VOCAB_HINT}")
    if "groups" not in data and "labels" in data:
        raise UserError(f"{origin}: labels must sit inside groups: {VOCAB_HINT}")
    try:
        return Vocabulary.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(origin, exc, Vocabulary)) from exc


def load_vocabulary(path: str | Path) -> Vocabulary:
    path = Path(path)
    return vocabulary_from_data(read_yaml(path), str(path))
