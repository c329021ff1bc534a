"""The http engine: model servers users already run, reached over HTTP.

Two wire protocols:

- `http-sglang`: SGLang's native `POST /generate`. The prompt travels as rendered text, so this
  client renders the chat itself (a generic ChatML template with the model's image placeholder, or
  the Jinja `chat_template` given in engine args). Constraints go in `sampling_params` (`ebnf`,
  `regex` or `json_schema` as a string); yes/no scores come from `token_ids_logprob` when the
  yes/no token ids are known, else from `top_logprobs_num`.
- `openai` / `vllm`: `POST /v1/chat/completions` with the image as an `image_url` part (never a
  placeholder in the text). Subset answers are constrained by `response_format` (JSON schema with
  `enum` + `maxItems`, which hosted APIs accept), by SGLang's top-level `ebnf` when the server is
  SGLang (`server_kind: sglang`), or by vLLM's `structured_outputs.grammar` in `vllm` mode.
  Yes/no scores come from `logprobs` / `top_logprobs`.

One `aiohttp.ClientSession` carries every request; its connection pool is sized to the engine's
concurrency, and requests go to the server with the fewest requests in flight. (aiohttp rather
than httpx: at 128 requests in flight httpx's pool spent most of the client's time assigning
requests to connections; the saturation benchmark measured about 8x more requests/s with aiohttp.) The base class owns
timeouts and retries: this module only decides which failures are transient (timeouts, connection
and protocol errors, 429, 5xx) and which are not (other 4xx).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import time
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from builder.engines.base import Engine, EngineError, Request, Result
from builder.engines.sglang_params import sglang_fields
from builder.errors import RunError, UserError
from builder.prompts.constraints import (
    Constraint,
    subset_ebnf,
    subset_json_schema,
    yes_probability,
    yesno_regex,
)
from builder.prompts.render import without_images

DEFAULT_IMAGE_TOKEN = "<|vision_start|><|image_pad|><|vision_end|>"

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

APIS = ("http-sglang", "openai", "vllm")
SERVER_KINDS = ("sglang", "vllm", "openai", "auto")
YES_WORDS = ("yes",)
NO_WORDS = ("no",)
SIM_HEADER = "x-tagllm-simulated"


@lru_cache(maxsize=256)
def data_url(image: bytes, mime: str = "image/jpeg") -> str:
    """Encoded once per image: every request about the image reuses it."""
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def redact_url(url: str) -> str:
    """A server URL without user:password@ (safe to show in cards and logs)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


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


def _word(token: Any) -> str:
    """A logprob token's text normalized for yes/no matching: no spaces or BPE space marks, lower."""
    text = str(token or "")
    return text.replace("Ġ", " ").replace("▁", " ").strip().lower()


def yes_prob_from_pairs(pairs: list[tuple[str, float]]) -> float | None:
    """P(yes)/(P(yes)+P(no)) summing every variant ("yes", " Yes", ...) seen among (token, logprob)."""
    p_yes = sum(math.exp(lp) for tok, lp in pairs if lp is not None and _word(tok) in YES_WORDS)
    p_no = sum(math.exp(lp) for tok, lp in pairs if lp is not None and _word(tok) in NO_WORDS)
    if p_yes == 0 and p_no == 0:
        return None
    return yes_probability(math.log(p_yes) if p_yes else None, math.log(p_no) if p_no else None)


def _error_message(status: int, text: str) -> str:
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
        if body.get("message"):
            return str(body["message"])[:300]
        if body.get("detail"):
            return str(body["detail"])[:300]
    return text[:200]


class HttpEngine(Engine):
    """Requests to one or more model servers over HTTP (SGLang native or OpenAI-compatible)."""

    name = "http"

    def __init__(
        self,
        servers: list[str] | tuple[str, ...] | str = (),
        api: str = "openai",
        api_key_env: str | None = None,
        vocab: Any = None,
        server_kind: str | None = None,
        chat_template: str | None = None,
        image_token: str = DEFAULT_IMAGE_TOKEN,
        yes_token_ids: list[int] | None = None,
        no_token_ids: list[int] | None = None,
        top_logprobs: int = 5,
        ready_timeout: float = 5.0,
        ready_wait: float = 0.0,
        check_ready: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(servers, str):
            servers = [servers]
        if api not in APIS:
            raise UserError(f"http engine: unknown api {api!r}; choose one of: {', '.join(APIS)}")
        self.servers = [s.rstrip("/") for s in servers if s and s.strip()]
        self.api = api
        self.api_key_env = api_key_env
        self.vocab = vocab
        self.server_kind = server_kind or ("vllm" if api == "vllm" else "sglang" if api == "http-sglang" else "openai")
        if self.server_kind not in SERVER_KINDS:
            raise UserError(f"http engine: unknown server_kind {server_kind!r}; "
                            f"choose one of: {', '.join(SERVER_KINDS)}")
        self.chat_template = chat_template
        self.image_token = image_token
        self.yes_token_ids = [int(t) for t in (yes_token_ids or [])]
        self.no_token_ids = [int(t) for t in (no_token_ids or [])]
        self.top_logprobs = int(top_logprobs)
        self.ready_timeout = ready_timeout
        self.ready_wait = ready_wait  # keep polling this long for servers still loading their model
        self.check_ready = check_ready
        self._client: aiohttp.ClientSession | None = None
        self._in_flight = {s: 0 for s in self.servers}
        self._sent = {s: 0 for s in self.servers}
        self._down_until = {s: 0.0 for s in self.servers}
        self._next = 0
        self.server_info: dict[str, Any] = {}
        self._served_model: str | None = None  # the server's own model name, when none was given

    # --- lifecycle -------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "tagllm"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise RunError(f"http engine: environment variable {self.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _make_client(self) -> aiohttp.ClientSession:
        # The base class bounds the whole request with `timeout`; these only guard the socket.
        timeout = aiohttp.ClientTimeout(total=None, connect=min(self.timeout, 10.0), sock_read=self.timeout)
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
        return aiohttp.ClientSession(headers=self._headers(), connector=connector, timeout=timeout)

    async def _fetch(self, method: str, url: str, body: Any = None,
                     timeout: float | None = None) -> tuple[int, str, Any]:
        """(status, text, headers) of one call; aiohttp errors propagate to the caller."""
        assert self._client is not None
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self._client.request(method, url, **kwargs) as response:
            return response.status, await response.text(), response.headers

    async def start(self) -> None:
        if not self.servers:
            raise RunError("http engine: no server given (use --server URL, repeatable, or engine.servers)")
        if self._client is None:
            self._client = self._make_client()
        if not self.check_ready:
            return
        deadline = time.monotonic() + self.ready_wait
        while True:
            answered: list[str] = []
            problems: list[str] = []
            for server in self.servers:
                problem = await self._probe(server)
                if problem is None:
                    answered.append(server)
                    self._down_until[server] = 0.0
                else:
                    problems.append(f"{redact_url(server)}: {problem}")
                    self._down_until[server] = time.monotonic() + 30.0
            if answered or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
        if not answered:
            await self.close()
            urls = ", ".join(redact_url(s) for s in self.servers)
            raise RunError(f"no server answered at {urls} ({'; '.join(problems)})")
        await self._read_model_info(answered[0])

    async def _probe(self, server: str) -> str | None:
        """None when the server is ready, else why not."""
        assert self._client is not None
        paths = ["/ready", "/health"] if self.api == "http-sglang" else [self._v1(server, "/models")]
        last = "no answer"
        for path in paths:
            try:
                status, text, headers = await self._fetch("GET", self._url(server, path), timeout=self.ready_timeout)
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if isinstance(exc, aiohttp.ClientConnectorError):
                    return last
                continue
            self._note_simulated(headers)
            if status < 400:
                return None
            if status in (401, 403):
                return f"HTTP {status} (check the API key): {_error_message(status, text)}"
            last = f"HTTP {status} on {path}"
        return last

    async def _read_model_info(self, server: str) -> None:
        """Note what the server says it serves (model path, image support, simulated)."""
        assert self._client is not None
        path = "/model_info" if self.api == "http-sglang" else self._v1(server, "/models")
        try:
            status, text, headers = await self._fetch("GET", self._url(server, path), timeout=self.ready_timeout)
            self._note_simulated(headers)
            if status >= 400:
                return
            body = json.loads(text)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return
        if not isinstance(body, dict):
            return
        if self.api == "http-sglang":
            for key in ("model_path", "served_model_name", "has_image_understanding", "model_type"):
                if key in body:
                    self.server_info[key] = body[key]
            if body.get("simulated"):
                self.simulated = True
            if body.get("has_image_understanding") is False:
                await self.close()
                raise RunError(f"the model at {redact_url(server)} ({body.get('model_path')}) cannot take images")
        else:
            data = body.get("data") or []
            if data and isinstance(data[0], dict):
                self.server_info["served_models"] = [d.get("id") for d in data if isinstance(d, dict)][:10]
                self._served_model = self.server_info["served_models"][0]
                if any(d.get("owned_by") == "tagllm-serve-sim" for d in data if isinstance(d, dict)):
                    self.simulated = True

    def _note_simulated(self, headers: Any) -> None:
        if headers.get(SIM_HEADER):
            self.simulated = True  # `tagllm serve-sim` answers: labels are simulated, say so

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            api=self.api,
            server_kind=self.server_kind,
            servers=[redact_url(s) for s in self.servers],
            requests_per_server={redact_url(s): n for s, n in self._sent.items()},
            api_key_env=self.api_key_env,  # the variable's name, never its value
        )
        if self.server_info:
            info["server_info"] = dict(self.server_info)
        if self.api == "http-sglang":
            info["chat_template"] = "custom" if self.chat_template else "generic-chatml"
            info["image_token"] = self.image_token
        return info

    # --- routing ---------------------------------------------------------------------------
    def _url(self, server: str, path: str) -> str:
        return server + path

    @staticmethod
    def _v1(server: str, path: str) -> str:
        """OpenAI paths: a base URL that already ends in /v1 (hosted APIs) gets no second /v1."""
        return path if server.endswith("/v1") else "/v1" + path

    def _pick(self) -> str:
        now = time.monotonic()
        candidates = [s for s in self.servers if self._down_until[s] <= now] or self.servers
        n = len(self.servers)
        order = [self.servers[(self._next + i) % n] for i in range(n)]
        self._next = (self._next + 1) % n
        return min((s for s in order if s in candidates), key=lambda s: self._in_flight[s])

    # --- one request -----------------------------------------------------------------------
    async def _generate_one(self, request: Request) -> Result:
        if self._client is None:
            self._client = self._make_client()
        server = self._pick()
        if self.api == "http-sglang":
            path, body = "/generate", self.native_body(request)
        else:
            path, body = self._v1(server, "/chat/completions"), self.chat_body(request)
        self._in_flight[server] += 1
        self._sent[server] += 1
        started = time.perf_counter()
        try:
            status, text, headers = await self._fetch("POST", self._url(server, path), body)
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise EngineError(f"timeout talking to {redact_url(server)} ({type(exc).__name__})",
                              transient=True) from exc
        except aiohttp.ClientError as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):
                self._down_until[server] = time.monotonic() + 2.0
            raise EngineError(f"{type(exc).__name__} from {redact_url(server)}: {exc}", transient=True) from exc
        finally:
            self._in_flight[server] -= 1
        self._note_simulated(headers)
        if status >= 400:
            transient = status == 429 or status >= 500
            raise EngineError(f"HTTP {status} from {redact_url(server)}: {_error_message(status, text)}",
                              transient=transient)
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise EngineError(f"malformed JSON from {redact_url(server)}: {text[:80]!r}",
                              transient=True) from exc
        if not isinstance(payload, dict):
            raise EngineError(f"unexpected answer from {redact_url(server)}: {str(payload)[:80]!r}", transient=True)
        if self.api == "http-sglang":
            result = self.read_native(payload, request)
        else:
            result = self.read_chat(payload, request)
        result.latency = time.perf_counter() - started
        return result

    # --- SGLang native /generate -----------------------------------------------------------
    def native_body(self, request: Request) -> dict[str, Any]:
        """The `/generate` body: rendered text, image as data URL, sampling params, logprobs."""
        params, fields = sglang_fields(request, self.yes_token_ids, self.no_token_ids, max(self.top_logprobs, 5))
        body: dict[str, Any] = {
            "text": render_chat(request.messages, self.chat_template, self.image_token, request.image is not None),
        }
        if request.image is not None:
            body["image_data"] = data_url(request.image)
        body.update(fields)
        if "top_logprobs_num" in fields:
            body["return_text_in_logprobs"] = True
        body["sampling_params"] = params
        return body

    def read_native(self, payload: dict[str, Any], request: Request) -> Result:
        if "text" not in payload:
            raise EngineError(f"no 'text' in the server answer: {str(payload)[:80]!r}", transient=True)
        meta = payload.get("meta_info") or {}
        result = Result(text=str(payload.get("text") or ""))
        result.prompt_tokens = int(meta.get("prompt_tokens") or 0)
        result.completion_tokens = int(meta.get("completion_tokens") or 0)
        result.cached_tokens = int(meta.get("cached_tokens") or 0)
        if request.constraint.kind == "yesno" and request.logprobs:
            result.yes_prob = self._native_yes_prob(meta)
        return result

    def _native_yes_prob(self, meta: dict[str, Any]) -> float | None:
        if self.yes_token_ids and self.no_token_ids:
            positions = meta.get("output_token_ids_logprobs") or []
            first = positions[0] if positions else []
            by_id = {int(e[1]): e[0] for e in first or [] if isinstance(e, (list, tuple)) and len(e) >= 2}
            p_yes = sum(math.exp(by_id[t]) for t in self.yes_token_ids if by_id.get(t) is not None)
            p_no = sum(math.exp(by_id[t]) for t in self.no_token_ids if by_id.get(t) is not None)
            if p_yes == 0 and p_no == 0:
                return None
            return p_yes / (p_yes + p_no)
        positions = meta.get("output_top_logprobs") or []
        first = positions[0] if positions else []
        pairs = [(e[2] if len(e) > 2 else None, e[0]) for e in first or [] if isinstance(e, (list, tuple))]
        return yes_prob_from_pairs(pairs)

    # --- OpenAI-compatible /v1/chat/completions --------------------------------------------
    def chat_body(self, request: Request) -> dict[str, Any]:
        constraint = request.constraint
        body: dict[str, Any] = {
            "model": self.model or self._served_model or "default",
            "messages": openai_messages(request.messages, request.image),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if constraint.kind == "subset":
            self._add_grammar(body, constraint)
        elif constraint.kind == "json_schema":
            schema = json.loads(constraint.schema) if constraint.schema else {"type": "object"}
            if self.api == "vllm":
                body["structured_outputs"] = {"json": schema}
            else:
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "answer", "schema": schema}}
        elif constraint.kind == "yesno":
            if request.logprobs:
                body["max_tokens"] = 1
                body["logprobs"] = True
                body["top_logprobs"] = self.top_logprobs
            elif self.api == "vllm":
                body["structured_outputs"] = {"choice": ["yes", "no"]}
            elif self.server_kind == "sglang":
                body["regex"] = yesno_regex()
        return body

    def _add_grammar(self, body: dict[str, Any], constraint: Constraint) -> None:
        """The subset constraint in the form this server accepts (exactly one form: SGLang rejects two)."""
        if self.api == "vllm":
            body["structured_outputs"] = {"grammar": subset_ebnf(constraint.options)}
        elif self.server_kind == "sglang":
            body["ebnf"] = subset_ebnf(constraint.options)
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "labels", "schema": subset_json_schema(constraint.options)},
            }

    def read_chat(self, payload: dict[str, Any], request: Request) -> Result:
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
            pairs: list[tuple[str, float]] = []
            if content and isinstance(content[0], dict):
                first = content[0]
                pairs = [(t.get("token"), t.get("logprob")) for t in first.get("top_logprobs") or []
                         if isinstance(t, dict)]
                if not pairs:
                    pairs = [(first.get("token"), first.get("logprob"))]
            result.yes_prob = yes_prob_from_pairs(pairs)
        return result
