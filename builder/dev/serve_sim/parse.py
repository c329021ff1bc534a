"""Reading requests as SGLang and OpenAI-compatible servers receive them: constraints, images, 400s.

The constraint is recovered from the wire form a real server gets (the labels quoted in the EBNF or
regex, the `enum` of the JSON schema, a one-token yes/no when logprobs are asked); what SGLang would
refuse raises `BadRequest`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from builder.dev.serve_sim.options import SGLANG_SAMPLING_KEYS, UNSUPPORTED_SCHEMA_KEYWORDS, BadRequest
from builder.prompts.constraints import Constraint, format_subset

_EBNF_PICK = re.compile(r'^t\d+ ::= "((?:[^"\\]|\\.)*)"')


def _unescape_ebnf(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal)


def options_from_ebnf(ebnf: str) -> tuple[str, ...] | None:
    """The labels of an ordered-subset grammar (`tK ::= "\\"label\\"" ...` rules), None if not one."""
    if "labels" not in ebnf:
        return None
    labels: list[str] = []
    for line in ebnf.splitlines():
        m = _EBNF_PICK.match(line.strip())
        if m:
            try:
                labels.append(json.loads(_unescape_ebnf(m.group(1))))
            except json.JSONDecodeError:
                return None
    return tuple(labels)


def options_from_regex(regex: str, vocab_names: list[str]) -> tuple[str, ...] | None:
    """The labels a subset regex allows: quoted strings in it (checked), else vocabulary labels it accepts."""
    if "labels" not in regex:
        return None
    try:
        compiled = re.compile(regex)
    except re.error:
        return None
    found: list[str] = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', regex):
        raw = re.sub(r"\\(.)", r"\1", m.group(1))
        try:
            label = json.loads(f'"{raw}"')
        except json.JSONDecodeError:
            continue
        if label != "labels" and label not in found and compiled.fullmatch(format_subset([label])):
            found.append(label)
    for name in vocab_names:
        if name not in found and compiled.fullmatch(format_subset([name])):
            found.append(name)
    order = {n: i for i, n in enumerate(vocab_names)}
    return tuple(sorted(found, key=lambda n: order.get(n, len(order)))) if found else ()


def check_schema(schema: Any, pointer: str = "") -> None:
    """Refuse what SGLang (xgrammar backend) refuses."""
    if isinstance(schema, dict):
        bad = sorted(k for k in schema if k in UNSUPPORTED_SCHEMA_KEYWORDS)
        if bad:
            raise BadRequest(f"JSON Schema at {pointer or '/'} is not supported by xgrammar: "
                             f"keyword(s) {', '.join(bad)} would be ignored")
        for key, value in schema.items():
            if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict):
                for name, sub in value.items():
                    check_schema(sub, f"{pointer}/{key}/{name}")
            elif isinstance(value, (dict, list)):
                check_schema(value, f"{pointer}/{key}")
    elif isinstance(schema, list):
        for i, sub in enumerate(schema):
            check_schema(sub, f"{pointer}/{i}")


def constraint_from_schema(schema_text: str) -> Constraint:
    try:
        schema = json.loads(schema_text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"json_schema is not valid JSON: {exc}") from exc
    check_schema(schema)
    labels = ((schema.get("properties") or {}).get("labels") or {}) if isinstance(schema, dict) else {}
    enum = (labels.get("items") or {}).get("enum") if isinstance(labels, dict) else None
    if isinstance(enum, list) and all(isinstance(e, str) for e in enum):
        return Constraint("subset", tuple(enum))
    return Constraint("json_schema", schema=schema_text)


def constraint_from_grammar(ebnf: str | None, regex: str | None, vocab_names: list[str]) -> Constraint | None:
    if ebnf is not None:
        if re.fullmatch(r'\s*root ::= "yes" \| "no"\s*', ebnf):
            return Constraint("yesno")
        options = options_from_ebnf(ebnf)
        return Constraint("subset", options) if options is not None else Constraint("free")
    if regex is not None:
        words = regex.strip().strip("^$").strip("()").lower().split("|")
        if words and set(w.strip() for w in words) <= {"yes", "no"}:
            return Constraint("yesno")
        options = options_from_regex(regex, vocab_names)
        return Constraint("subset", options) if options is not None else Constraint("free")
    return None


def decode_data_url(value: Any) -> bytes | None:
    """Image bytes from a data URL or bare base64 (the forms both protocols carry)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str) or not value:
        return None
    payload = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"image_data is not base64: {exc}") from exc


def parse_native(body: Any, vocab_names: list[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("invalid type: expected struct GenerateRequest")
    text = body.get("text")
    if not isinstance(text, str):
        raise BadRequest("text must be a single string (batched /generate is not simulated)")
    params = body.get("sampling_params") or {}
    if not isinstance(params, dict):
        raise BadRequest("invalid type: sampling_params, expected struct SamplingParams")
    for key in params:
        if key not in SGLANG_SAMPLING_KEYS:
            raise BadRequest(f"unknown field `{key}`, expected one of "
                             + ", ".join(f"`{k}`" for k in sorted(SGLANG_SAMPLING_KEYS)))
    grammars = [k for k in ("json_schema", "regex", "ebnf", "structural_tag") if params.get(k)]
    if len(grammars) > 1:
        raise BadRequest("Only one of json_schema, regex, ebnf, or structural_tag can be set.")
    for key in ("json_schema", "regex", "ebnf"):
        if key in params and params[key] is not None and not isinstance(params[key], str):
            raise BadRequest(f"invalid type: {key}, expected a string")
    max_new = params.get("max_new_tokens", 128)
    logprobs = bool(body.get("return_logprob"))
    if params.get("json_schema"):
        constraint = constraint_from_schema(params["json_schema"])
    else:
        constraint = constraint_from_grammar(params.get("ebnf"), params.get("regex"), vocab_names)
    if constraint is None:
        constraint = Constraint("yesno") if (max_new == 1 or logprobs) else Constraint("free")
    return {
        "text": text,
        "question": question_from_prompt(text),
        "image": decode_data_url(body.get("image_data")),
        "constraint": constraint,
        "logprobs": logprobs,
        "seed": params.get("sampling_seed"),
        "token_ids_logprob": body.get("token_ids_logprob"),
        "top_logprobs_num": body.get("top_logprobs_num"),
        "return_text": bool(body.get("return_text_in_logprobs")),
    }


def parse_chat(body: Any, vocab_names: list[str]) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadRequest("messages: field required")
    texts: list[str] = []
    question = ""
    image: bytes | None = None
    for message in body["messages"]:
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "developer"):
            raise BadRequest("messages: each message needs a role of system, user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            if message["role"] == "user":
                question = content
            continue
        if not isinstance(content, list):
            raise BadRequest("messages: content must be a string or a list of parts")
        parts_text = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts_text.append(str(part.get("text", "")))
            elif kind == "image_url":
                image = decode_data_url((part.get("image_url") or {}).get("url"))
            else:
                raise BadRequest(f"messages: unsupported content part type {kind!r}")
        texts.append("\n".join(parts_text))
        if message["role"] == "user":
            question = "\n".join(parts_text)
    structured = body.get("structured_outputs") or {}
    sources = [k for k in ("ebnf", "regex") if body.get(k)]
    response_format = body.get("response_format") or {}
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        sources.append("response_format")
    if len(sources) > 1:
        raise BadRequest("Only one of json_schema, regex, ebnf, or structural_tag can be set.")
    constraint: Constraint | None = None
    if body.get("ebnf") or body.get("regex"):
        constraint = constraint_from_grammar(body.get("ebnf"), body.get("regex"), vocab_names)
    elif isinstance(structured, dict) and structured:
        if structured.get("grammar"):
            constraint = constraint_from_grammar(structured["grammar"], None, vocab_names)
        elif structured.get("regex"):
            constraint = constraint_from_grammar(None, structured["regex"], vocab_names)
        elif structured.get("json") is not None:
            constraint = constraint_from_schema(json.dumps(structured["json"]))
        elif structured.get("choice"):
            constraint = Constraint("yesno")
    elif "response_format" in sources:
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema")
        if schema is None:
            raise BadRequest("schema_ is required for json_schema response format request.")
        constraint = constraint_from_schema(json.dumps(schema))
    logprobs = bool(body.get("logprobs"))
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 0):
        raise BadRequest("top_logprobs must be a non-negative integer")
    if logprobs is False and top:
        raise BadRequest("top_logprobs requires logprobs to be true")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if constraint is None:
        constraint = Constraint("yesno") if (max_tokens == 1 or logprobs) else Constraint("free")
    return {
        "text": "\n".join(texts),
        "question": question,
        "image": image,
        "constraint": constraint,
        "logprobs": logprobs,
        "seed": body.get("seed"),
        "top_logprobs": top or 0,
    }


def question_from_prompt(text: str) -> str:
    """The last user turn of a rendered ChatML prompt (the whole text when it is not ChatML)."""
    marker = "<|im_start|>user"
    if marker in text:
        tail = text.rsplit(marker, 1)[1]
        return tail.split("<|im_end|>", 1)[0].strip()
    return text
