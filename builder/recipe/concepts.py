"""Concept sheet: the calibrated description of each label used by the verification prompt."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from builder.errors import UserError
from builder.recipe.vocab import Vocabulary, format_validation_error, read_yaml


class Concept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="What the label means for this dataset's annotators.")
    includes: list[str] = Field(default_factory=list, description="Cases that count as the label.")
    excludes: list[str] = Field(default_factory=list, description="Cases that do not count.")
    confusable: list[str] = Field(default_factory=list, description="Labels often mistaken for it.")
    cooccurring: list[str] = Field(default_factory=list, description="Labels that often appear with it.")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Per-label score threshold.")


class ConceptSheet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocabulary: str = Field("", description="Name of the vocabulary this sheet is written for.")
    version: str = Field("1", description="Human version tag of the sheet.")
    concepts: dict[str, Concept] = Field(default_factory=dict, description="Entries keyed by label.")
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="Who/what wrote the sheet and the dev metrics it was tuned on."
    )

    def digest(self) -> str:
        body = {"concepts": {k: v.model_dump() for k, v in sorted(self.concepts.items())}}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def check_against(self, vocab: Vocabulary, origin: str) -> None:
        names = set(vocab.names)
        for label, concept in self.concepts.items():
            if label not in names:
                raise UserError(f"{origin}: concepts.{label}: not a label of the vocabulary")
            for other in concept.confusable + concept.cooccurring:
                if other not in names:
                    raise UserError(f"{origin}: concepts.{label}: {other!r} is not a label of the vocabulary")

    def concept(self, vocab: Vocabulary, name: str) -> Concept:
        """The sheet's entry, or one built from the vocabulary description when there is none."""
        if name in self.concepts:
            entry = self.concepts[name]
            if entry.description:
                return entry
            return entry.model_copy(update={"description": vocab.label(name).description})
        return Concept(description=vocab.label(name).description)

    def save(self, path: str | Path) -> None:
        data = self.model_dump(exclude_none=True)
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def load_concept_sheet(path: str | Path) -> ConceptSheet:
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: a concept sheet must be a mapping with 'concepts'")
    try:
        return ConceptSheet.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(str(path), exc, ConceptSheet)) from exc
