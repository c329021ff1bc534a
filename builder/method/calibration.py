"""Concept calibration, the method's part: what to ask the LLM, how to read its answer, what to keep.

The workflow that runs it (dev / held-out split, engines, cache, rounds, threshold tuning,
provenance) is `builder.workflows.calibrate`; everything here is pure: prompts, the revision schema
and parser, the keep rule, and the choice of labels to revise.

A label's verification question depends only on that label's entry, so the proposals of one
round are checked together in one pass and do not influence each other's numbers.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from builder.engines.base import Request, Result
from builder.errors import UserError
from builder.prompts.constraints import Constraint, ParseError, json_answer, longest_answer
from builder.recipe.concepts import Concept, ConceptSheet
from builder.recipe.vocab import Vocabulary

SHEET_STRATEGIES = ("tagllm", "yes-no")  # the strategies whose verification question uses the sheet
SIMULATED_NOTICE = ("Calibrated with the simulated engine: its answers come from the human labels plus seeded "
                    "noise and a toy model of disambiguation. The metrics test the pipeline, not a model.")
LLM_SYSTEM = ("You write concept definitions for the labels of an image dataset, so that an image annotator "
              "model labels images the way this dataset's human annotators did. Answer with JSON only.")
EPS = 1e-9
KEEP_RULE = "F1 on the dev set rises (or, with F1 unchanged, fewer false positives)"


def better(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """The keep rule: F1 rises; with F1 unchanged (e.g. a label with no dev positives), fewer
    false positives without losing a true positive also counts."""
    if after["f1"] > before["f1"] + EPS:
        return True
    return abs(after["f1"] - before["f1"]) <= EPS and after["tp"] >= before["tp"] and after["fp"] < before["fp"]


# --- proposals and decisions ------------------------------------------------------------------------


@dataclass
class Proposal:
    """One revised entry for one label, with the dev metrics before and (once re-checked) after."""

    round: int
    label: str
    before: Concept
    after: Concept
    metrics_before: dict[str, Any]
    confusions: list[dict[str, Any]] = field(default_factory=list)
    metrics_after: dict[str, Any] | None = None
    decision: str = ""  # kept | rejected (automatic); accepted | edited | skipped (interactive)
    dev_size: int = 0

    def improves(self) -> bool:
        return self.metrics_after is not None and better(self.metrics_after, self.metrics_before)

    def diff(self, after: Concept | None = None) -> str:
        old = entry_yaml(self.label, self.before).splitlines(keepends=True)
        new = entry_yaml(self.label, after or self.after).splitlines(keepends=True)
        return "".join(difflib.unified_diff(old, new, f"{self.label} (current)", f"{self.label} (proposed)"))

    def metrics_line(self) -> str:
        b, a = self.metrics_before, self.metrics_after or {}

        def pair(key: str, fmt: str) -> str:
            after = format(a[key], fmt) if key in a else "?"
            return f"{key} {format(b[key], fmt)} -> {after}"

        parts = [pair("f1", ".3f"), pair("precision", ".3f"), pair("recall", ".3f"), pair("fp", "d"), pair("fn", "d")]
        return (f"dev ({self.dev_size} images, {b['support']} with {self.label!r}): " + ", ".join(parts))

    def to_provenance(self) -> dict[str, Any]:
        out = {"round": self.round, "label": self.label, "decision": self.decision,
               "kept": self.decision in ("kept", "accepted", "edited"),
               "confusions": self.confusions,
               "f1_before": self.metrics_before["f1"],
               "f1_after": (self.metrics_after or {}).get("f1"),
               "fp_before": self.metrics_before["fp"], "fp_after": (self.metrics_after or {}).get("fp"),
               "fn_before": self.metrics_before["fn"], "fn_after": (self.metrics_after or {}).get("fn")}
        if not out["kept"]:
            out["proposed"] = plain(self.after)
        return out


@dataclass
class Decision:
    """What a person (or a `decide` callback) made of a proposal."""

    action: Literal["accept", "edit", "skip"]
    concept: Concept | None = None  # the edited entry, for "edit"


Decide = Callable[[Proposal], Decision]


def entry_yaml(label: str, concept: Concept) -> str:
    return yaml.safe_dump(plain(concept), sort_keys=False, allow_unicode=True, width=100)


def plain(concept: Concept) -> dict[str, Any]:
    return concept.model_dump(exclude_none=True)


def parse_entry(text: str, vocab: Vocabulary, label: str) -> Concept:
    """An entry a person edited (YAML), validated against the vocabulary."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{label}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping with description, includes, excludes, confusable")
    try:
        concept = Concept.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"{label}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    ConceptSheet(concepts={label: concept}).check_against(vocab, "edited entry")
    return concept


# --- the LLM request --------------------------------------------------------------------------------


def revision_schema(names: list[str]) -> dict[str, Any]:
    """The JSON schema of a revised entry (the fields of `Concept` but the threshold; no uniqueItems).

    Every string and list is bounded, so an answer always ends inside its budget (`revision_request`)."""
    text_list = {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 8}
    label_list = {"type": "array", "items": {"type": "string", "enum": list(names)}, "maxItems": 8}
    return {
        "type": "object",
        "properties": {
            "description": {"type": "string", "maxLength": 400},
            "includes": text_list,
            "excludes": text_list,
            "confusable": label_list,
            "cooccurring": label_list,
        },
        "required": ["description", "includes", "excludes", "confusable", "cooccurring"],
        "additionalProperties": False,
    }


def calibration_prompt(vocab: Vocabulary, label: str, entry: Concept, stats: dict[str, Any],
                       confusions: list[dict[str, Any]], missed_for: list[dict[str, Any]], dev_size: int,
                       rejected: list[dict[str, Any]]) -> str:
    """The question for the LLM. The findings travel in a ```json block, readable by any model
    (and by the simulated engine, which answers from them)."""
    group = vocab.group_of(label)
    members = [lab.name for g in vocab.groups if g.name == group for lab in g.labels]
    findings = {"label": label, "group": group, "entry": plain(entry),
                "dev": {"images": dev_size, **stats}, "confusions": confusions, "missed_for": missed_for,
                "rejected_earlier": rejected}
    lines = [
        f'Revise the concept entry of the label "{label}" (group "{group}") of the vocabulary "{vocab.name}".',
        f"All labels of the vocabulary: {', '.join(vocab.names)}.",
        f"Labels of the same group: {', '.join(members)}.",
        f"On {dev_size} human-labeled images, with the current entry the annotator model reached precision "
        f"{stats['precision']:.2f}, recall {stats['recall']:.2f}, F1 {stats['f1']:.2f} "
        f"({stats['tp']} correct, {stats['fp']} said wrongly, {stats['fn']} missed).",
    ]
    if confusions:
        lines.append(f'It said "{label}" where the human labels had instead: '
                     + ", ".join(f"{c['label']} ({c['count']}x)" for c in confusions) + ".")
    if missed_for:
        lines.append(f'It missed "{label}" and said instead: '
                     + ", ".join(f"{c['label']} ({c['count']}x)" for c in missed_for) + ".")
    lines += [
        "Write a revised entry: a one- or two-sentence description of what counts as this label for these "
        "annotators; includes (cases that count); excludes (cases that do not, naming look-alike labels); "
        "confusable (labels of the vocabulary it is mistaken for); cooccurring (labels often seen with it). "
        "Keep what is right in the current entry. Proposals rejected earlier did not improve the dev F1.",
        "Findings:",
        "```json",
        json.dumps(findings, ensure_ascii=False),
        "```",
    ]
    return "\n".join(lines)


def revision_request(prompt: str, names: list[str], tag: str = "calibrate", max_tokens: int | None = None) -> Request:
    """A text-only request (no image) constrained to the revision schema; by default its budget holds the
    longest answer the schema allows."""
    messages = [{"role": "system", "content": LLM_SYSTEM},
                {"role": "user", "content": [{"type": "text", "text": prompt}]}]
    schema = revision_schema(names)
    return Request(messages=messages, image=None, constraint=Constraint("json_schema", schema=json.dumps(schema)),
                   max_tokens=max_tokens or longest_answer(schema) or 768, temperature=0.0, tag=tag)


def parse_revision(vocab: Vocabulary, label: str, current: Concept) -> Callable[[Request, Result], Concept]:
    """Parser of the LLM's answer: validated, deduped, labels outside the vocabulary dropped."""
    names = set(vocab.names)

    def parse(request: Request, result: Result) -> Concept:
        try:
            data = json_answer(result.text)
        except json.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {result.text[:60]!r}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("description", ""), str):
            raise ParseError("expected an object with a description")

        def texts(key: str) -> list[str]:
            value = data.get(key) or []
            if not isinstance(value, list):
                raise ParseError(f"{key}: expected a list")
            return list(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))

        def labels(key: str) -> list[str]:
            return [v for v in texts(key) if v in names and v != label]

        return Concept(description=data.get("description", "").strip() or current.description,
                       includes=texts("includes"), excludes=texts("excludes"), confusable=labels("confusable"),
                       cooccurring=labels("cooccurring"), threshold=current.threshold)

    return parse


def pick_targets(rows: list[tuple[str, dict[str, Any], int]], worst: int) -> list[str]:
    """Labels with dev errors, from (label, dev stats, confusions) rows in vocabulary order: most
    confusions first (what a concept entry can fix), then lowest F1, then most errors."""
    order = {name: i for i, (name, _, _) in enumerate(rows)}
    rows = [r for r in rows if r[1]["fp"] + r[1]["fn"] > 0]
    rows.sort(key=lambda r: (-r[2], r[1]["f1"], -(r[1]["fp"] + r[1]["fn"]), order[r[0]]))
    return [name for name, _, _ in rows[:worst]]


def new_proposals(proposals: list[Proposal], tried: dict[str, set[str]]) -> list[Proposal]:
    """Proposals that change their entry and were not tried before (remembered in `tried`)."""
    fresh = []
    for p in proposals:
        key = json.dumps(plain(p.after), sort_keys=True)
        if p.after == p.before or key in tried.setdefault(p.label, set()):
            continue
        tried[p.label].add(key)
        fresh.append(p)
    return fresh


def settle(proposals: list[Proposal], decide: Decide | None,
           rejected: dict[str, list[dict[str, Any]]]) -> dict[str, Concept]:
    """Decide each re-checked proposal (the keep rule, or `decide`); return the entries to adopt.
    Rejected and skipped ones are remembered in `rejected`, so the next round's prompt names them."""
    accepted: dict[str, Concept] = {}
    for p in proposals:
        if decide is None:
            p.decision = "kept" if p.improves() else "rejected"
        else:
            d = decide(p)
            p.decision = {"skip": "skipped", "accept": "accepted", "edit": "edited"}[d.action]
            if d.action == "edit" and d.concept is not None:
                p.after = d.concept
        if p.decision in ("kept", "accepted", "edited"):
            accepted[p.label] = p.after
        else:
            rejected.setdefault(p.label, []).append({"entry": plain(p.after), "dev": p.metrics_after})
    return accepted


def with_entries(sheet: ConceptSheet, entries: dict[str, Concept], keep_threshold: bool = True) -> ConceptSheet:
    """A copy of the sheet with these entries replaced (keeping each label's earlier threshold)."""
    out = sheet.model_copy(deep=True)
    for label, concept in entries.items():
        old = sheet.concepts.get(label)
        if keep_threshold and old is not None and concept.threshold is None:
            concept = concept.model_copy(update={"threshold": old.threshold})
        out.concepts[label] = concept
    return out
