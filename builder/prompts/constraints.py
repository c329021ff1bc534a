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
import re
from dataclasses import dataclass
from typing import Any, Literal

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


_NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufffd]")  # control characters, undecodable bytes


def json_answer(text: str) -> Any:
    """A model's JSON answer: raw control characters and undecodable bytes inside strings are dropped.

    Grammar backends (xgrammar under SGLang 0.5.23, seen with a random model) let a string hold raw
    control characters, which strict JSON refuses, and bytes that are no UTF-8 (decoded as U+FFFD, each
    counted apart, so a string can pass its `maxLength` in characters); neither means anything in a
    label or description."""
    return _clean(json.loads(text, strict=False))


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _NOT_TEXT.sub("", value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def longest_answer(schema: dict[str, Any]) -> int | None:
    """The most characters of a JSON answer under `schema` (separators ", " and ": "), or None when unbounded.

    A JSON-schema constraint only ends an answer when its strings and arrays are bounded (`maxLength`,
    `maxItems`, `enum`): an answer budget of this many tokens then holds any answer of plain text, as the
    ordered-subset grammar does for stage 1. (Escapes and multi-byte characters can cost more tokens.)"""
    if "enum" in schema:
        return max(len(json.dumps(v, ensure_ascii=False)) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return schema["maxLength"] + 2 if "maxLength" in schema else None
    if kind == "array":
        item = longest_answer(schema.get("items", {}))
        if item is None or "maxItems" not in schema:
            return None
        count = schema["maxItems"]
        return 2 + count * item + 2 * max(0, count - 1)
    if kind == "object":
        properties = schema.get("properties") or {}
        total = 2 + 2 * max(0, len(properties) - 1)
        for name, sub in properties.items():
            size = longest_answer(sub)
            if size is None:
                return None
            total += len(json.dumps(name)) + 2 + size
        return total
    if kind in ("integer", "number"):
        return 24
    if kind == "boolean":
        return 5
    return None
