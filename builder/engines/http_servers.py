"""What the http engine learns from a server before the first request: its kind and yes/no token ids.

- Kind (`server_kind: auto`): `/v1/models` says `owned_by: "sglang"` or `"vllm"` on those
  servers; otherwise SGLang answers `/model_info` (or `/get_model_info`) and vLLM `/version`.
  Anything else is an "openai" server (hosted APIs, `tagllm serve-sim`, ...).
- Yes/no ids: SGLang and vLLM both have `POST /tokenize`; the spellings that come back as one
  token are the ids to ask logprobs for.
- SGLang's own flags (`/server_info`): the ones that change what a build costs or reports are
  kept in the engine's description, and a missing one is named with its flag.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from builder.engines.base import EngineError, Request
from builder.engines.http_wire import Wire, render_chat
from builder.prompts.scoring import SPELLINGS, YesNoIds, ids_from_tokenized
from builder.recipe.model import redact_url

Fetch = Callable[[str, str, Any], Awaitable[tuple[int, str, Any]]]


def v1(server: str, path: str) -> str:
    """OpenAI paths: a base URL that already ends in /v1 (hosted APIs) gets no second /v1."""
    return path if server.endswith("/v1") else "/v1" + path


def error_message(status: int, text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200].strip() or f"HTTP {status}"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])[:300]
    return text[:200]


async def readiness(fetch: Fetch, server: str, paths: list[str]) -> str | None:
    """None when the server answers the first of `paths` that it has, else why not (one line)."""
    import aiohttp

    last = "no answer"
    for path in paths:
        try:
            status, text, _ = await fetch("GET", server + path, None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if isinstance(exc, aiohttp.ClientConnectorError):
                return last
            continue
        if status < 400:
            return None
        if status in (401, 403):
            return f"HTTP {status} (check the API key): {error_message(status, text)}"
        last = f"HTTP {status} on {path}"
    return last


async def fetch_json(fetch: Fetch, method: str, url: str, body: Any = None) -> Any:
    try:
        status, text, _ = await fetch(method, url, body)
    except Exception:  # a probe that fails just says "not this kind"
        return None
    if status >= 400:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


async def detect_kind(fetch: Fetch, server: str) -> str:
    """"sglang", "vllm" or "openai", from what the server itself says."""
    models = await fetch_json(fetch, "GET", server + v1(server, "/models"))
    owners = {d.get("owned_by") for d in (models or {}).get("data") or [] if isinstance(d, dict)}
    for kind in ("sglang", "vllm"):
        if kind in owners:
            return kind
    if owners - {None}:
        return "openai"  # someone else's models (a hosted API, serve-sim)
    if (await fetch_json(fetch, "GET", server + "/model_info")
            or await fetch_json(fetch, "GET", server + "/get_model_info")):
        return "sglang"
    version = await fetch_json(fetch, "GET", server + "/version")
    if isinstance(version, dict) and "version" in version:
        return "vllm"
    return "openai"


# SGLang flags that matter to a tagllm build: (ServerArgs field, is it set well, api it matters for, advice)
SGLANG_FLAGS = (
    ("enable_cache_report", lambda v: v is True, "openai",
     "--enable-cache-report (without it SGLang's chat endpoint reports 0 cached tokens, so stats and cost "
     "cannot show the prefix cache)"),
    ("mm_preprocess_cache_size_mb", lambda v: bool(v), None,
     "--mm-preprocess-cache-size-mb 512 (without it SGLang decodes and preprocesses an image again for each "
     "of its ~13 questions)"),
)


async def sglang_flags(fetch: Fetch, server: str, api: str) -> tuple[dict[str, Any], list[str]]:
    """(the flags above as the server has them, advice for each one that is off); empty when not told."""
    info = (await fetch_json(fetch, "GET", server + "/server_info")
            or await fetch_json(fetch, "GET", server + "/get_server_info"))
    if not isinstance(info, dict):
        return {}, []
    flags = {name: info.get(name) for name, *_ in SGLANG_FLAGS if name in info}
    if "version" in info:
        flags["version"] = info["version"]
    advice = [text for name, good, only, text in SGLANG_FLAGS
              if name in info and (only is None or only == api) and not good(info[name])]
    return flags, advice


async def context_length(fetch: Fetch, server: str) -> int | None:
    """The served model's context length, where `/v1/models` says it (`max_model_len`: SGLang, vLLM)."""
    models = await fetch_json(fetch, "GET", server + v1(server, "/models"))
    data = [d for d in (models or {}).get("data") or [] if isinstance(d, dict)] if isinstance(models, dict) else []
    value = data[0].get("max_model_len") if data else None
    return value if isinstance(value, int) and value > 0 else None


CONTEXT_MARGIN = 16  # tokens a server's chat template may add around our rendering of the messages


async def fit_context(fetch: Fetch, server: str, wire: Wire, request: Request, max_model_len: int) -> Request:
    """A long answer budget (authoring's JSON drafts) cut to what the server's context leaves after the
    prompt, counted by its `/tokenize`: servers refuse a request whose prompt + max_tokens exceed it."""
    text = render_chat(request.messages, wire.chat_template, wire.image_token, has_image=False)
    answer = await fetch_json(fetch, "POST", server + "/tokenize", {"model": wire.model, "prompt": text,
                                                               "add_special_tokens": False})
    count = answer.get("count") if isinstance(answer, dict) else None
    if not isinstance(count, int):
        return request
    room = max_model_len - count - CONTEXT_MARGIN
    if room < 1:
        raise EngineError(f"the prompt ({count} tokens) leaves no room for an answer in the model's context of "
                          f"{max_model_len} tokens at {redact_url(server)}", transient=False)
    if room >= request.max_tokens:
        return request
    fitted = request.about(None)
    fitted.max_tokens = room
    return fitted


async def tokenize_yes_no(fetch: Fetch, server: str, model: str, native: bool = False) -> YesNoIds:
    """The yes/no token ids from the server's `/tokenize`; on SGLang's native protocol, where that is missing
    (sglang-router passes only `/generate` on), from the prompt tokens of a `/generate` that generates nothing.
    Empty when neither tells."""
    texts = [text for word in SPELLINGS.values() for text in word]  # never an empty prompt: it crashes SGLang
    tokenized: dict[str, list[int]] = {}
    for text in texts:
        body = {"model": model, "prompt": text, "add_special_tokens": False}
        answer = await fetch_json(fetch, "POST", server + "/tokenize", body)
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if tokens is None:
            break
        tokenized[text] = [int(t) for t in tokens if isinstance(t, int)]
    else:
        return ids_from_tokenized(tokenized)
    if not native:
        return YesNoIds((), ())
    for text in texts:
        body = {"text": text, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "logprob_start_len": 0}
        answer = await fetch_json(fetch, "POST", server + "/generate", body)
        meta = answer.get("meta_info") if isinstance(answer, dict) else None
        entries = meta.get("input_token_logprobs") if isinstance(meta, dict) else None
        if not entries:
            return YesNoIds((), ())
        tokenized[text] = [int(e[1]) for e in entries if isinstance(e, list) and len(e) > 1]
    firsts = {tokens[0] for tokens in tokenized.values() if tokens}
    if len(firsts) == 1:  # every spelling starts with the same token: the tokenizer's BOS, not part of the word
        tokenized = {text: tokens[1:] for text, tokens in tokenized.items()}
    return ids_from_tokenized(tokenized)
