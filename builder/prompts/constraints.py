"""Output constraints in every form a backend accepts, and the client-side parsers.

The stage-1 answer is an *ordered subset*: labels appear in vocabulary order, each at most once,
so there is exactly one valid string per label set and generation always terminates. Backends
get it as EBNF (SGLang `ebnf`, xgrammar, vLLM `structured_outputs.grammar`) or as a JSON schema
with `enum` + `maxItems` (no `uniqueItems`: SGLang rejects it); the parser always re-validates
(a label listed twice is a broken answer, re-asked: a fault must never add a label). Labels stay
in their own characters (no `\\u` escapes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

YES = "yes"
NO = "no"


@dataclass(frozen=True)
class Constraint:
    """What the answer must look like. `options` are the allowed labels for subset answers."""

    kind: Literal["subset", "yesno", "json_schema", "free"]
    options: tuple[str, ...] = ()
    schema: str = ""  # for kind json_schema: the JSON schema text

    def key(self) -> str:
        return json.dumps([self.kind, list(self.options), self.schema], separators=(",", ":"))


def _quoted(label: str) -> str:
    """A label as it appears inside the JSON answer, escaped for an EBNF string literal."""
    as_json = json.dumps(label, ensure_ascii=False)  # "dining table"; "café" stays "café", not "caf\\u00e9"
    return as_json.replace("\\", "\\\\").replace('"', '\\"')


def subset_ebnf(options: tuple[str, ...] | list[str]) -> str:
    """EBNF for `{"labels":[...]}` where the list is an ordered subset of `options`.

    Rule `tK` means: the list continues with a label whose index is >= K. It either picks label
    K (then optionally a comma and `t(K+1)`) or skips to `t(K+1)`. O(n) rules, no free whitespace.
    """
    n = len(options)
    lines = ['root ::= "{\\"labels\\":[" t0? "]}"' if n else 'root ::= "{\\"labels\\":[]}"']
    for k, label in enumerate(options):
        pick = f'"{_quoted(label)}"'
        if k + 1 < n:
            lines.append(f'tail{k} ::= "," t{k + 1}')
            lines.append(f"t{k} ::= {pick} tail{k}? | t{k + 1}")
        else:
            lines.append(f"t{k} ::= {pick}")
    return "\n".join(lines) + "\n"


def subset_json_schema(options: tuple[str, ...] | list[str]) -> dict:
    """JSON schema for hosted APIs: enum + maxItems (`parse_subset` refuses repeated labels)."""
    return {
        "type": "object",
        "properties": {
            "labels": {"type": "array", "items": {"type": "string", "enum": list(options)}, "maxItems": len(options)}
        },
        "required": ["labels"],
        "additionalProperties": False,
    }


class ParseError(ValueError):
    """The answer does not satisfy the constraint."""


def parse_subset(text: str, options: tuple[str, ...] | list[str]) -> list[str]:
    """Labels from a stage-1 answer, validated against `options`, in vocabulary order.

    Any order is accepted (JSON-schema servers list labels as they come), a repeated label is not:
    the ordered-subset grammar cannot produce one, so it marks a broken answer worth a re-ask."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {text[:60]!r}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
        raise ParseError(f"no 'labels' list in {text[:60]!r}")
    allowed = set(options)
    picked = set()
    for value in data["labels"]:
        if not isinstance(value, str) or value not in allowed:
            raise ParseError(f"{value!r} is not one of the allowed labels")
        if value in picked:
            raise ParseError(f"{value!r} is listed twice")
        picked.add(value)
    return [label for label in options if label in picked]


def format_subset(labels: list[str]) -> str:
    """The one canonical answer string for a label set (labels already in option order)."""
    return json.dumps({"labels": labels}, separators=(",", ":"), ensure_ascii=False)


def yesno_regex() -> str:
    return f"({YES}|{NO})"


def parse_yesno(text: str) -> bool:
    word = text.strip().lower().rstrip(".!")
    if word.startswith(YES):
        return True
    if word.startswith(NO):
        return False
    raise ParseError(f"not yes/no: {text[:30]!r}")
