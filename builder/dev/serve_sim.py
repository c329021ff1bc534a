"""`tagllm serve-sim`: a model server that answers from human labels, for tests, benchmarks and dry runs.

It speaks the subset of both wire protocols the http engine uses:

- SGLang native: `GET /ready`, `GET /health`, `GET /model_info`, `POST /generate`;
- OpenAI-compatible: `GET /v1/models`, `POST /v1/chat/completions` (SGLang's top-level `ebnf` /
  `regex`, `response_format` JSON schema, vLLM's `structured_outputs`);

plus `GET /stats` (JSON counters of requests and injected faults).

Answers come from `SimulatedModel`: the constraint is recovered from the request exactly as a real
server would receive it (the labels quoted in the EBNF or regex, the `enum` of the JSON schema,
a one-token yes/no when logprobs are asked), the question is the prompt text, and the reference
labels are looked up by the sha256 of the image bytes in an oracle built from a recipe's source.

Load and failure behaviour are configurable: per-request latency, a capacity (requests processed at
once; the rest queue), and seeded fault rates: 5xx, hangs longer than a client timeout, dropped
connections, malformed JSON, empty answers, and answers that violate the constraint. Bad requests
get the same 400s SGLang gives (unknown sampling keys, two constraints, `uniqueItems`).

Every response carries `X-Tagllm-Simulated: 1` and the model info says `simulated: true`, so a
client can tell (and the dataset card can say) that the labels are simulated.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from builder.engines.simulated import NoiseModel, SimulatedModel
from builder.images import image_digest
from builder.prompts.constraints import Constraint, format_subset

SIM_HEADER = "X-Tagllm-Simulated"
OWNER = "tagllm-serve-sim"

# The sampling-param keys SGLang 0.5.23's /generate contract accepts (sglang/api/v1 SamplingParams);
# anything else is a 400, as on the real server. The contract tests check this list against the wheel.
SGLANG_SAMPLING_KEYS = frozenset({
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k", "min_p",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n", "json_schema",
    "regex", "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens",
    "no_stop_trim", "stream_interval", "logit_bias", "sampling_seed", "custom_params", "beam_width",
    "watermark",
})
# JSON-schema keywords SGLang's xgrammar backend refuses (it would silently ignore them).
UNSUPPORTED_SCHEMA_KEYWORDS = frozenset({
    "contains", "dependentRequired", "dependentSchemas", "else", "if", "maxContains", "minContains",
    "multipleOf", "not", "then", "uniqueItems",
})
FAULT_KINDS = ("5xx", "timeout", "drop", "malformed", "empty", "violate")


@dataclass
class SimOptions:
    """How the simulated server behaves. Rates are probabilities per generation request."""

    latency: float = 0.0  # seconds each request is "processed"
    capacity: int = 0  # requests processed at once (0 = no limit); the rest wait in a queue
    fault_5xx: float = 0.0
    fault_timeout: float = 0.0  # hang `hang_seconds` before answering (longer than a client timeout)
    fault_drop: float = 0.0  # close the connection without an answer
    fault_malformed: float = 0.0  # invalid JSON body
    fault_empty: float = 0.0  # empty answer text
    fault_violate: float = 0.0  # an answer outside the constraint
    hang_seconds: float = 30.0
    seed: int = 0  # seeds fault injection (the noise model has its own seed)
    model_name: str = "tagllm-sim"
    api_key: str | None = None  # when set, requests need `Authorization: Bearer <api_key>`

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            rate = getattr(self, f"fault_{kind}")
            if not 0 <= rate <= 1:
                raise ValueError(f"fault_{kind} must be in [0, 1], got {rate}")
        if sum(getattr(self, f"fault_{k}") for k in FAULT_KINDS) > 1:
            raise ValueError("fault rates add up to more than 1")


@dataclass
class SimStats:
    requests: Counter = field(default_factory=Counter)  # by endpoint
    faults: Counter = field(default_factory=Counter)  # by fault kind
    bad_requests: int = 0
    unauthorized: int = 0
    answered: int = 0
    oracle_hits: int = 0
    oracle_misses: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    queued: int = 0
    max_queued: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["requests"] = dict(self.requests)
        data["faults"] = dict(self.faults)
        data["generation_requests"] = sum(v for k, v in self.requests.items() if k in ("generate", "chat"))
        return data


class BadRequest(Exception):
    """A request SGLang would refuse with 400."""


# --- oracle -----------------------------------------------------------------------------------
def image_key(data: bytes) -> str:
    return image_digest(data)  # memoized: the simulated model hashes the same bytes again


def build_oracle(loaded: Any) -> dict[str, list[str] | None]:
    """sha256 of each item's engine image (as a build prepares it) -> the item's human labels."""
    from builder.images import ImageProblem, prepare_image
    from builder.sources import open_source

    recipe = loaded.recipe
    oracle: dict[str, list[str] | None] = {}
    for item in open_source(recipe.source, loaded.vocab, loaded.base_dir):
        if item.image is None:
            continue
        try:
            prepared = prepare_image(item.image, recipe.engine.max_pixels, recipe.output.max_image_pixels)
        except ImageProblem:
            continue
        oracle[image_key(prepared.data)] = item.reference
    return oracle


# --- reading constraints back out of requests ---------------------------------------------------
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


# --- the server -------------------------------------------------------------------------------
class SimServer:
    """The request handlers and their shared state (model, oracle, options, counters)."""

    def __init__(self, model: SimulatedModel, oracle: dict[str, list[str] | None] | None = None,
                 options: SimOptions | None = None):
        self.model = model
        self.oracle = oracle or {}
        self.options = options or SimOptions()
        self.stats = SimStats()
        self._rng = random.Random(self.options.seed)
        self._semaphore: asyncio.Semaphore | None = None
        self._vocab_names = list(model.vocab.names) if model.vocab is not None else []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/health", self.ready)
        app.router.add_get("/health_generate", self.ready)
        app.router.add_get("/model_info", self.model_info)
        app.router.add_get("/get_model_info", self.model_info)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/generate", self.generate)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.options.api_key and request.path != "/stats":
            if request.headers.get("Authorization") != f"Bearer {self.options.api_key}":
                self.stats.unauthorized += 1
                response: web.StreamResponse = web.json_response(
                    {"error": {"message": "invalid or missing API key", "type": "authentication_error"}},
                    status=401)
                response.headers[SIM_HEADER] = "1"
                return response
        response = await handler(request)
        response.headers[SIM_HEADER] = "1"
        return response

    # --- small endpoints -----------------------------------------------------------------
    async def ready(self, request: web.Request) -> web.Response:
        self.stats.requests[request.path.strip("/")] += 1
        return web.Response(status=200)

    async def model_info(self, request: web.Request) -> web.Response:
        self.stats.requests["model_info"] += 1
        return web.json_response({
            "model_path": self.options.model_name,
            "served_model_name": self.options.model_name,
            "tokenizer_path": None,
            "is_generation": True,
            "has_image_understanding": True,
            "model_type": "simulated",
            "simulated": True,
        })

    async def models(self, request: web.Request) -> web.Response:
        self.stats.requests["models"] += 1
        return web.json_response({"object": "list", "data": [
            {"id": self.options.model_name, "object": "model", "created": 0, "owned_by": OWNER}
        ]})

    async def get_stats(self, request: web.Request) -> web.Response:
        data = self.stats.to_json()
        data["options"] = {k: v for k, v in asdict(self.options).items() if k != "api_key"}
        data["oracle_size"] = len(self.oracle)
        return web.json_response(data)

    # --- generation ------------------------------------------------------------------------
    async def generate(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests["generate"] += 1
        return await self._serve(request, native=True)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests["chat"] += 1
        return await self._serve(request, native=False)

    def _draw_fault(self) -> str | None:
        r = self._rng.random()
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += getattr(self.options, f"fault_{kind}")
            if r < edge:
                return kind
        return None

    async def _serve(self, request: web.Request, native: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._bad("request body is not valid JSON", native)
        try:
            parsed = self._parse_native(body) if native else self._parse_chat(body)
        except BadRequest as exc:
            return self._bad(str(exc), native)
        fault = self._draw_fault()
        if fault:
            self.stats.faults[fault] += 1
        if fault == "5xx":
            return web.json_response({"error": {"message": "simulated internal server error",
                                                "type": "internal_error", "code": 503}}, status=503)
        if fault == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client: the connection is gone
        if fault == "timeout":
            await asyncio.sleep(self.options.hang_seconds)
        answer = await self._process(parsed)
        if fault == "empty":
            answer.text = ""
        elif fault == "violate":
            answer.text = self._violation(parsed["constraint"], answer.text)
        if fault == "malformed":
            return web.Response(text='{"text": "' + answer.text[:20], content_type="application/json")
        self.stats.answered += 1
        return web.json_response(self._native_answer(answer, parsed) if native else self._chat_answer(answer, parsed))

    async def _process(self, parsed: dict[str, Any]) -> Any:
        if self._semaphore is None and self.options.capacity > 0:
            self._semaphore = asyncio.Semaphore(self.options.capacity)
        self.stats.queued += 1
        self.stats.max_queued = max(self.stats.max_queued, self.stats.queued)
        async with self._semaphore if self._semaphore is not None else contextlib.nullcontext():
            self.stats.queued -= 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            try:
                if self.options.latency:
                    await asyncio.sleep(self.options.latency)
                image = parsed["image"]
                key = image_key(image) if image is not None else None
                if key is not None and key in self.oracle:
                    self.stats.oracle_hits += 1
                    reference = self.oracle[key]
                else:
                    self.stats.oracle_misses += 1
                    reference = None
                return self.model.answer(image, parsed["text"], parsed["question"], parsed["constraint"],
                                         reference, parsed["logprobs"], seed=parsed["seed"])
            finally:
                self.stats.in_flight -= 1

    def _violation(self, constraint: Constraint, text: str) -> str:
        if constraint.kind == "subset":
            options = list(constraint.options)
            if options and self._rng.random() < 0.5:
                return json.dumps({"labels": [options[0], options[0]]}, separators=(",", ":"))
            return json.dumps({"labels": ["not-a-label"]}, separators=(",", ":"))
        if constraint.kind == "yesno":
            return "maybe"
        if constraint.kind == "json_schema":
            return text[: max(1, len(text) // 2)]
        return text

    def _bad(self, message: str, native: bool) -> web.Response:
        self.stats.bad_requests += 1
        if native:
            return web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                                "code": 400}}, status=400)
        return web.json_response({"object": "error", "message": message, "type": "BadRequestError",
                                  "param": None, "code": 400}, status=400)

    # --- request parsing -------------------------------------------------------------------
    def _parse_native(self, body: Any) -> dict[str, Any]:
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
            constraint = constraint_from_grammar(params.get("ebnf"), params.get("regex"), self._vocab_names)
        if constraint is None:
            constraint = Constraint("yesno") if (max_new == 1 or logprobs) else Constraint("free")
        return {
            "text": text,
            "question": _question_from_prompt(text),
            "image": decode_data_url(body.get("image_data")),
            "constraint": constraint,
            "logprobs": logprobs,
            "seed": params.get("sampling_seed"),
            "token_ids_logprob": body.get("token_ids_logprob"),
            "top_logprobs_num": body.get("top_logprobs_num"),
            "return_text": bool(body.get("return_text_in_logprobs")),
        }

    def _parse_chat(self, body: Any) -> dict[str, Any]:
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
            constraint = constraint_from_grammar(body.get("ebnf"), body.get("regex"), self._vocab_names)
        elif isinstance(structured, dict) and structured:
            if structured.get("grammar"):
                constraint = constraint_from_grammar(structured["grammar"], None, self._vocab_names)
            elif structured.get("regex"):
                constraint = constraint_from_grammar(None, structured["regex"], self._vocab_names)
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

    # --- answers ---------------------------------------------------------------------------
    def _yes_no_logprobs(self, answer: Any) -> tuple[float, float]:
        lp = answer.extra.get("logprobs") or {}
        if "yes" in lp and "no" in lp:
            return lp["yes"], lp["no"]
        p = answer.yes_prob if answer.yes_prob is not None else (0.9 if answer.text == "yes" else 0.1)
        return math.log(p), math.log(1 - p)

    def _native_answer(self, answer: Any, parsed: dict[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": hashlib.sha1(f"{time.time_ns()}{id(answer)}".encode()).hexdigest()[:16],
            "finish_reason": {"type": "stop", "matched": None},
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "cached_tokens": answer.cached_tokens,
            "e2e_latency": self.options.latency,
        }
        if parsed["logprobs"] and parsed["constraint"].kind == "yesno":
            lp_yes, lp_no = self._yes_no_logprobs(answer)
            chosen = (lp_yes, SIM_YES_ID, "yes") if lp_yes >= lp_no else (lp_no, SIM_NO_ID, "no")

            def text_or_none(token: str) -> str | None:
                return token if parsed["return_text"] else None

            meta["output_token_logprobs"] = [[chosen[0], chosen[1], text_or_none(chosen[2])]]
            if parsed["top_logprobs_num"]:
                top = sorted([[lp_yes, SIM_YES_ID, text_or_none("yes")], [lp_no, SIM_NO_ID, text_or_none("no")]],
                             key=lambda e: -e[0])
                meta["output_top_logprobs"] = [top[: int(parsed["top_logprobs_num"])]]
            ids = parsed["token_ids_logprob"]
            if ids:
                table = {SIM_YES_ID: lp_yes, SIM_NO_ID: lp_no}
                meta["output_token_ids_logprobs"] = [[[table.get(int(t), -30.0), int(t), None] for t in ids]]
        return {"text": answer.text, "output_ids": [], "meta_info": meta}

    def _chat_answer(self, answer: Any, parsed: dict[str, Any]) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": answer.text, "reasoning_content": None, "tool_calls": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
        if parsed["logprobs"] and parsed["constraint"].kind == "yesno":
            lp_yes, lp_no = self._yes_no_logprobs(answer)
            entries = sorted([{"token": "yes", "logprob": lp_yes, "bytes": list(b"yes")},
                              {"token": "no", "logprob": lp_no, "bytes": list(b"no")}], key=lambda e: -e["logprob"])
            top = entries[: parsed["top_logprobs"]] if parsed["top_logprobs"] else []
            choice["logprobs"] = {"content": [{**entries[0], "top_logprobs": top}]}
        return {
            "id": "chatcmpl-" + hashlib.sha1(f"{time.time_ns()}{id(answer)}".encode()).hexdigest()[:16],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.options.model_name,
            "choices": [choice],
            "usage": {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": answer.cached_tokens},
            },
        }


SIM_KEY: web.AppKey[SimServer] = web.AppKey("tagllm_sim", SimServer)

# Token ids the simulated tokenizer gives "yes" and "no" (pass them as engine.args yes_token_ids /
# no_token_ids to exercise SGLang's token_ids_logprob path).
SIM_YES_ID = 9891
SIM_NO_ID = 2152


def _question_from_prompt(text: str) -> str:
    """The last user turn of a rendered ChatML prompt (the whole text when it is not ChatML)."""
    marker = "<|im_start|>user"
    if marker in text:
        tail = text.rsplit(marker, 1)[1]
        return tail.split("<|im_end|>", 1)[0].strip()
    return text


# --- running it -------------------------------------------------------------------------------
def make_server(recipe: str | Path | Any | None = None, vocab: Any = None,
                oracle: dict[str, list[str] | None] | None = None, noise: NoiseModel | None = None,
                **options: Any) -> SimServer:
    """A SimServer from a recipe (its vocabulary, noise model and source labels) or explicit parts."""
    if recipe is not None:
        from builder.recipe.model import LoadedRecipe, load_recipe

        loaded = recipe if isinstance(recipe, LoadedRecipe) else load_recipe(recipe)
        vocab = vocab or loaded.vocab
        if noise is None:
            sim = loaded.recipe.engine.simulation.model_dump()
            noise = NoiseModel(**{k: v for k, v in sim.items() if k in NoiseModel.__dataclass_fields__})
        if oracle is None:
            oracle = build_oracle(loaded)
    return SimServer(SimulatedModel(vocab, noise), oracle, SimOptions(**options))


async def start_server(recipe: str | Path | Any | None = None, host: str = "127.0.0.1", port: int = 30000,
                       *, vocab: Any = None, oracle: dict[str, list[str] | None] | None = None,
                       noise: NoiseModel | None = None, **options: Any) -> web.AppRunner:
    """Start serving in the running event loop; returns the aiohttp runner (`await runner.cleanup()`).

    The bound address is in `runner.addresses` (port 0 picks a free port). The SimServer is at
    `runner.app[SIM_KEY]`.
    """
    server = make_server(recipe, vocab=vocab, oracle=oracle, noise=noise, **options)
    app = server.app()
    app[SIM_KEY] = server
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def serve(recipe_path: str | Path | None, host: str = "127.0.0.1", port: int = 30000,
          api_key_env: str | None = None, **options: Any) -> None:
    """Serve until interrupted (Ctrl-C). What `tagllm serve-sim` calls.

    `options` are SimOptions fields (latency, capacity, fault_* rates, hang_seconds, seed,
    model_name). With `api_key_env`, requests must carry that variable's value as a Bearer token.
    """
    if api_key_env:
        import os

        from builder.errors import UserError

        key = os.environ.get(api_key_env)
        if not key:
            raise UserError(f"serve-sim: environment variable {api_key_env} (the API key) is not set")
        options["api_key"] = key

    async def main() -> None:
        runner = await start_server(recipe_path, host, port, **options)
        bound = runner.addresses[0] if runner.addresses else (host, port)
        server: SimServer = runner.app[SIM_KEY]
        print(f"tagllm serve-sim: SIMULATED answers (human labels + seeded noise) at http://{bound[0]}:{bound[1]} "
              f"({len(server.oracle)} images in the oracle)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


@contextlib.contextmanager
def running_sim_server(recipe: str | Path | Any | None = None, *, host: str = "127.0.0.1", port: int = 0,
                       vocab: Any = None, oracle: dict[str, list[str] | None] | None = None,
                       noise: NoiseModel | None = None, **options: Any) -> Iterator[str]:
    """Run a serve-sim in a background thread on a free port; yields its base URL.

    `with running_sim_server(recipe="recipes/demo.yaml", fault_5xx=0.1) as url: ...`
    Counters are at `GET {url}/stats`.
    """
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["runner"] = loop.run_until_complete(
                start_server(recipe, host, port, vocab=vocab, oracle=oracle, noise=noise, **options))
        except BaseException as exc:  # surface start errors in the calling thread
            box["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        try:
            loop.run_until_complete(box["runner"].cleanup())
        finally:
            pending = asyncio.all_tasks(loop)  # handlers still hanging (fault_timeout) or queued
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=run, name="tagllm-serve-sim", daemon=True)
    thread.start()
    started.wait(timeout=60)
    if "error" in box:
        raise box["error"]
    runner = box["runner"]
    bound = runner.addresses[0]
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
