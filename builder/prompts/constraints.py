"""Output constraints in every form a backend accepts, and the client-side parsers.

The stage-1 answer is an *ordered subset*: labels appear in vocabulary order, each at most once,
so there is exactly one valid string per label set and generation always terminates. Backends
get it as EBNF (SGLang `ebnf`, xgrammar, vLLM `structured_outputs.grammar`), as a regex, or as a
JSON schema with `enum` + `maxItems` (no `uniqueItems`: SGLang rejects it); the parser always
re-validates and dedupes, whatever the backend promised.
"""

from __future__ import annotations

import json
import re
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
    as_json = json.dumps(label)  # "dining table"
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


def subset_regex(options: tuple[str, ...] | list[str]) -> str:
    """The same language as a regex: nested optional groups keep the order, each label once."""
    tail = ""
    for label in reversed(options):
        item = re.escape(json.dumps(label))
        if tail:
            tail = f"(?:{item}(?:,{tail})?|{tail})"
        else:
            tail = f"(?:{item})"
    body = f"(?:{tail})?" if tail else ""
    return re.escape('{"labels":[') + body + re.escape("]}")


def subset_json_schema(options: tuple[str, ...] | list[str]) -> dict:
    """JSON schema for hosted APIs: enum + maxItems (dedupe happens in `parse_subset`)."""
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
    """Labels from a stage-1 answer, validated against `options`, deduped, in vocabulary order."""
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
        picked.add(value)
    return [label for label in options if label in picked]


def format_subset(labels: list[str]) -> str:
    """The one canonical answer string for a label set (labels already in option order)."""
    return json.dumps({"labels": labels}, separators=(",", ":"))


def yesno_regex() -> str:
    return f"({YES}|{NO})"


def yesno_ebnf() -> str:
    return f'root ::= "{YES}" | "{NO}"\n'


def parse_yesno(text: str) -> bool:
    word = text.strip().lower().rstrip(".!")
    if word.startswith(YES):
        return True
    if word.startswith(NO):
        return False
    raise ParseError(f"not yes/no: {text[:30]!r}")


def yes_probability(logprob_yes: float | None, logprob_no: float | None) -> float | None:
    """P(yes) / (P(yes) + P(no)) from token logprobs; None when neither token was seen."""
    import math

    if logprob_yes is None and logprob_no is None:
        return None
    p_yes = math.exp(logprob_yes) if logprob_yes is not None else 0.0
    p_no = math.exp(logprob_no) if logprob_no is not None else 0.0
    total = p_yes + p_no
    return p_yes / total if total > 0 else None
