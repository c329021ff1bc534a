"""Request bodies and answer readers of the http engine, one pair per wire protocol.

- SGLang native `POST /generate`: rendered text (generic ChatML or a given Jinja chat template with
  the model's image placeholder), the image as a data URL, constraints in `sampling_params`, yes/no
  scores from `token_ids_logprob` when the ids are known, else from `top_logprobs_num`.
- OpenAI-compatible `POST /v1/chat/completions`: the image as an `image_url` part. Per server kind:
  vLLM gets `structured_outputs` and `logprob_token_ids`; SGLang its top-level `ebnf`/`regex`, and
  for yes/no scores a `logit_bias` of the same size on every yes/no id (its chat endpoint has no
  token-id logprobs; an equal bias leaves P(yes)/(P(yes)+P(no)) as it was and puts exactly those
  ids on top, where they are read by word); any other server a JSON schema and the largest
  `top_logprobs` it accepts, with a stated bound for a missing side.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from builder.engines.base import EngineError, Request, Result
from builder.engines.sglang_params import sglang_fields
from builder.images import image_digest
from builder.prompts.constraints import subset_ebnf, subset_json_schema, yesno_regex
from builder.prompts.render import without_images
from builder.prompts.scoring import WORD_IDS, YesNoIds, by_word, yes_probability

DEFAULT_IMAGE_TOKEN = "<|vision_start|><|image_pad|><|vision_end|>"
OPENAI_MAX_TOP_LOGPROBS = 20  # the most OpenAI's API (and most compatible servers) accept
# Added to every yes/no logit on SGLang's chat endpoint: large enough that nothing else outranks them,
# and the same for all, so their ratios (the score) do not change.
YES_NO_BIAS = 100.0

# A generic ChatML template: what Qwen-family models use. `image_token` is the model's image
# placeholder; SGLang expands it into the image's tokens.
GENERIC_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ image_token }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class Wire:
    """What shapes a body: the protocol, the server kind, the yes/no ids, the template."""

    api: str = "openai"
    server_kind: str = "openai"
    model: str = "default"
    ids: YesNoIds = YesNoIds((), ())
    top_logprobs: int = OPENAI_MAX_TOP_LOGPROBS
    chat_template: str | None = None
    image_token: str = DEFAULT_IMAGE_TOKEN


@lru_cache(maxsize=256)
def data_url(image: bytes, mime: str = "image/jpeg") -> str:
    """Encoded once per image: every request about the image reuses it."""
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


_IMAGE_SLOT = "tagllm:image-data-url"  # stands for the data URL while the rest of a body is encoded
_SLOT_BYTES = f'"{_IMAGE_SLOT}"'.encode()


class BodyBytes:
    """Encoded bodies by question: the bytes around the image's data URL are made once per question
    (and wire settings), so a request about another image costs one join, not a body build and an encode.

    A data URL holds only characters JSON never escapes, so the joined bytes are those of `json.dumps(body)`."""

    MAX = 4096

    def __init__(self, make: Callable[[Request], dict[str, Any]]):
        self.make = make
        self._memo: dict[tuple, tuple[Any, list[bytes]]] = {}

    def encode(self, wire: Wire, request: Request) -> bytes:
        key = (id(request.messages), request.constraint, request.max_tokens, request.temperature, request.logprobs,
               request.seed, request.top_p, request.top_k, request.repetition_penalty, request.image is None,
               wire.api, wire.server_kind, wire.model, wire.ids, wire.top_logprobs, wire.chat_template,
               wire.image_token)
        made = self._memo.get(key)
        if made is None or made[0] is not request.messages:  # the memo holds the messages: ids stay unique
            body = self.make(request)
            url = data_url(request.image) if request.image is not None else None
            text = json.dumps(_swap(body, url) if url is not None else body).encode()
            made = (request.messages, text.split(_SLOT_BYTES))
            if len(self._memo) >= self.MAX:
                self._memo.clear()
            self._memo[key] = made
        parts = made[1]
        if request.image is None:
            return parts[0]
        return _url_bytes(data_url(request.image)).join(parts)


@lru_cache(maxsize=256)
def _url_bytes(url: str) -> bytes:
    return f'"{url}"'.encode()


def _swap(value: Any, url: str) -> Any:
    """A copy of a body with the data URL string replaced by the slot (dicts and lists copied, nothing else)."""
    if value is url:
        return _IMAGE_SLOT
    if isinstance(value, dict):
        return {k: _swap(v, url) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, url) for v in value]
    return value


def render_chat(messages: list[dict[str, Any]], template: str | None = None,
                image_token: str = DEFAULT_IMAGE_TOKEN, has_image: bool = True) -> str:
    """Chat messages -> one prompt string with the image placeholder where the image part was."""
    if not has_image:
        messages = without_images(messages)
    return _chat_template(template or GENERIC_CHAT_TEMPLATE).render(
        messages=messages, add_generation_prompt=True, image_token=image_token
    )


@lru_cache(maxsize=8)
def _chat_template(source: str) -> Any:
    import jinja2

    return jinja2.Environment(autoescape=False, keep_trailing_newline=True).from_string(source)


def openai_messages(messages: list[dict[str, Any]], image: bytes | None) -> list[dict[str, Any]]:
    """Our chat messages with the image as an `image_url` part (no placeholder in the text)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        parts: list[dict[str, Any]] = []
        for part in content:
            if part.get("type") == "image":
                if image is not None:
                    parts.append({"type": "image_url", "image_url": {"url": data_url(image)}})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    return out


# --- SGLang native /generate -----------------------------------------------------------------
def native_body(wire: Wire, request: Request) -> dict[str, Any]:
    """The `/generate` body: rendered text, image as data URL, sampling params, logprobs."""
    params, fields = sglang_fields(request, wire.ids, wire.top_logprobs)
    has_image = request.image is not None
    body: dict[str, Any] = {"text": render_chat(request.messages, wire.chat_template, wire.image_token, has_image)}
    if has_image:
        body["image_data"] = data_url(request.image)
    body.update(fields)
    if "top_logprobs_num" in fields:
        body["return_text_in_logprobs"] = True
    body["sampling_params"] = params
    return body


def read_native(payload: dict[str, Any], request: Request, ids: YesNoIds) -> Result:
    if "text" not in payload:
        raise EngineError(f"no 'text' in the server answer: {str(payload)[:80]!r}", transient=True)
    meta = payload.get("meta_info") or {}
    result = Result(text=str(payload.get("text") or ""))
    result.prompt_tokens = int(meta.get("prompt_tokens") or 0)
    result.completion_tokens = int(meta.get("completion_tokens") or 0)
    result.cached_tokens = int(meta.get("cached_tokens") or 0)
    if request.constraint.kind == "yesno" and request.logprobs:
        set_score(result, *native_logprobs(meta, ids))
    return result


def native_logprobs(meta: dict[str, Any], ids: YesNoIds) -> tuple[dict[int, float], YesNoIds, float | None]:
    """SGLang's first-position logprob entries `[logprob, token_id, text]` -> ({id: logprob}, ids, floor)."""
    if ids:
        first = (meta.get("output_token_ids_logprobs") or [[]])[0] or []
        return {int(e[1]): e[0] for e in first if isinstance(e, (list, tuple)) and len(e) >= 2}, ids, None
    first = (meta.get("output_top_logprobs") or [[]])[0] or []
    entries = [e for e in first if isinstance(e, (list, tuple)) and e and e[0] is not None]
    floor = min((float(e[0]) for e in entries), default=None)
    return by_word((e[2] if len(e) > 2 else None, e[0]) for e in entries), WORD_IDS, floor


def set_score(result: Result, logprobs: dict[int, float], ids: YesNoIds, floor: float | None) -> None:
    score = yes_probability(logprobs, ids, floor)
    if score is not None:
        result.yes_prob = score.p_yes
        if score.bounded:
            result.extra["score_bound"] = "one side outside the top logprobs: its logprob taken as the smallest seen"


# --- OpenAI-compatible /v1/chat/completions ----------------------------------------------------
def chat_body(wire: Wire, request: Request) -> dict[str, Any]:
    constraint = request.constraint
    body: dict[str, Any] = {
        "model": wire.model,
        "messages": openai_messages(request.messages, request.image),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if wire.server_kind in ("sglang", "vllm"):  # their extras; hosted APIs refuse these names
        body["top_k"] = request.top_k
        body["repetition_penalty"] = request.repetition_penalty
    if request.seed is not None:
        body["seed"] = request.seed
    if constraint.kind in ("subset", "json_schema"):
        _add_structure(wire, body, constraint)
    elif constraint.kind == "yesno":
        if request.logprobs:
            body["max_tokens"] = 1
            body["logprobs"] = True
            if wire.server_kind == "vllm" and wire.ids:
                body["logprob_token_ids"] = wire.ids.all()  # logprobs of exactly these ids
                body["return_tokens_as_token_ids"] = True  # entries come back as "token_id:N"
            elif wire.server_kind == "sglang" and wire.ids:
                body["logit_bias"] = {str(t): YES_NO_BIAS for t in wire.ids.all()}
                body["top_logprobs"] = min(len(wire.ids.all()), wire.top_logprobs)
            else:
                body["top_logprobs"] = wire.top_logprobs
        elif wire.server_kind == "vllm":
            body["structured_outputs"] = {"choice": ["yes", "no"]}
        elif wire.server_kind == "sglang":
            body["regex"] = yesno_regex()
    return body


def _add_structure(wire: Wire, body: dict[str, Any], constraint: Any) -> None:
    """A constraint in the one form this server accepts (SGLang rejects two forms at once)."""
    if constraint.kind == "json_schema":
        schema = json.loads(constraint.schema) if constraint.schema else {"type": "object"}
        if wire.server_kind == "vllm":
            body["structured_outputs"] = {"json": schema}
        else:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    elif wire.server_kind == "vllm":
        body["structured_outputs"] = {"grammar": subset_ebnf(constraint.options)}
    elif wire.server_kind == "sglang":
        body["ebnf"] = subset_ebnf(constraint.options)
    else:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "labels", "schema": subset_json_schema(constraint.options)}}


def read_chat(payload: dict[str, Any], request: Request, wire: Wire) -> Result:
    choices = payload.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise EngineError(f"no choices in the server answer: {str(payload)[:80]!r}", transient=True)
    choice = choices[0]
    message = choice.get("message") or {}
    result = Result(text=str(message.get("content") or ""))
    usage = payload.get("usage") or {}
    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    result.completion_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    result.cached_tokens = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    if request.constraint.kind == "yesno" and request.logprobs:
        content = ((choice.get("logprobs") or {}).get("content")) or []
        first = content[0] if content and isinstance(content[0], dict) else {}
        set_score(result, *chat_logprobs(first, wire))
    return result


def chat_logprobs(first: dict[str, Any], wire: Wire) -> tuple[dict[int, float], YesNoIds, float | None]:
    """The first answer token's logprobs -> ({id: logprob}, ids, floor for a missing side).

    vLLM with `logprob_token_ids` + `return_tokens_as_token_ids` lists every asked id in
    `top_logprobs` as `"token_id:N"`; other servers return their top tokens by text (on SGLang with
    the yes/no ids biased, exactly those ids: no side can be missing, so there is no floor).
    """
    top = [t for t in first.get("top_logprobs") or [] if isinstance(t, dict) and t.get("logprob") is not None]
    if not top and first.get("logprob") is not None:
        top = [first]
    if wire.server_kind == "vllm" and wire.ids:
        by_id = {int(t["token"][9:]): float(t["logprob"]) for t in top
                 if str(t.get("token", "")).startswith("token_id:") and t["token"][9:].isdigit()}
        return by_id, wire.ids, None
    biased = wire.server_kind == "sglang" and bool(wire.ids)
    full = len(top) >= wire.top_logprobs and not biased
    floor = min((float(t["logprob"]) for t in top), default=None) if full else None
    return by_word((t.get("token"), t.get("logprob")) for t in top), WORD_IDS, floor


# sglang-router's `--policy manual` sends requests with the same key to one worker: keyed by the
# image, all requests about one image reach the replica that has its tokens cached.
ROUTING_HEADER = "X-SMG-Routing-Key"


def routing_key(request: Request) -> dict[str, str] | None:
    return {ROUTING_HEADER: image_digest(request.image)[:32]} if request.image else None
