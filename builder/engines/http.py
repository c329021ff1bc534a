"""The http engine: model servers users already run, reached over HTTP.

Two wire protocols (`http_protocols`; bodies and readers in `http_wire`): `http-sglang` is SGLang's
native `POST /generate`; `openai` / `vllm` is `POST /v1/chat/completions`. Before the first request the
engine learns what it talks to (`http_servers`): the model it serves (a model it does not serve is
refused), the server kind when `server_kind` is `auto`, the yes/no token ids, the context length, and on
SGLang the flags that matter. On a real SGLang server's native protocol one image's questions of one kind
go as one batch call (`http_batch`). The calls themselves (session, errors, refusals) are `http_client`'s.

Routing keeps one image on one server (chosen by a hash of the image), so its prefix cache holds the
image for all of its requests; only when that server is down or saturated does a request go to the
least-loaded other one. The base class owns timeouts and retries.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from builder.engines.base import Engine, EngineError, EngineStop, Request, Result
from builder.engines.http_batch import batch_answers, batch_body
from builder.engines.http_client import HttpCalls
from builder.engines.http_protocols import PROTOCOLS
from builder.engines.http_servers import (
    context_length,
    detect_kind,
    fetch_json,
    fit_context,
    readiness,
    sglang_flags,
    tokenize_yes_no,
)
from builder.engines.http_wire import (
    DEFAULT_IMAGE_TOKEN,
    GENERIC_CHAT_TEMPLATE,
    OPENAI_MAX_TOP_LOGPROBS,
    BodyBytes,
    Wire,
    chat_body,
    native_body,
    render_chat,
    routing_key,
)
from builder.errors import RunError, UserError
from builder.images import image_digest
from builder.prompts.scoring import YesNoIds
from builder.recipe.model import redact_url

__all__ = ["DEFAULT_IMAGE_TOKEN", "GENERIC_CHAT_TEMPLATE", "HttpEngine", "redact_url", "render_chat"]

APIS = tuple(PROTOCOLS)
SERVER_KINDS = ("sglang", "vllm", "openai", "auto")


class HttpEngine(HttpCalls, Engine):
    """Requests to one or more model servers over HTTP (SGLang native or OpenAI-compatible)."""

    name = "http"

    def __init__(
        self,
        servers: list[str] | tuple[str, ...] | str = (),
        api: str = "openai",
        api_key_env: str | None = None,
        server_kind: str | None = None,
        chat_template: str | None = None,
        image_token: str = DEFAULT_IMAGE_TOKEN,
        yes_token_ids: list[int] | None = None,
        no_token_ids: list[int] | None = None,
        top_logprobs: int = OPENAI_MAX_TOP_LOGPROBS,
        ready_timeout: float = 5.0,
        ready_wait: float = 0.0,
        check_ready: bool = True,
        batch: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(servers, str):
            servers = [servers]
        if api not in APIS:
            raise UserError(f"http engine: unknown api {api!r}; choose one of: {', '.join(APIS)}")
        self.servers = [s.rstrip("/") for s in servers if s and s.strip()]
        self.api = api
        self.protocol = PROTOCOLS[api]
        self.api_key_env = api_key_env
        kind = server_kind or {"vllm": "vllm", "http-sglang": "sglang"}.get(api, "auto")
        if kind not in SERVER_KINDS:
            raise UserError(f"http engine: unknown server_kind {server_kind!r}; "
                            f"choose one of: {', '.join(SERVER_KINDS)}")
        self.wire = Wire(api=api, server_kind="openai" if kind == "auto" else kind, chat_template=chat_template,
                         image_token=image_token, top_logprobs=int(top_logprobs),
                         ids=YesNoIds(tuple(int(t) for t in yes_token_ids or ()),
                                      tuple(int(t) for t in no_token_ids or ())))
        self.detect = kind == "auto"
        self.ready_timeout = ready_timeout
        self.ready_wait = ready_wait  # keep polling this long for servers still loading their model
        self.check_ready = check_ready
        self.batch = batch  # one image's questions of one kind in one native call (`http_batch`)
        self._client: aiohttp.ClientSession | None = None
        self._bytes = BodyBytes(lambda request: self.body(request))  # bodies built once per question
        self._in_flight = {s: 0 for s in self.servers}
        self._sent = {s: 0 for s in self.servers}
        self._down_until = {s: 0.0 for s in self.servers}
        self.server_info: dict[str, Any] = {}
        self._served_model: str | None = None  # the server's own model name, when none was given
        self.max_model_len: int | None = None  # the server's context length, when its /v1/models says
        self._answered = 0  # requests the servers accepted (any status below 400)
        self._refused: list[str] = []  # refusals (REFUSED statuses) before the first accepted request
        self._stopped: str | None = None  # why nothing more is sent

    @property
    def server_kind(self) -> str:
        return self.wire.server_kind

    @property
    def yes_token_ids(self) -> list[int]:
        return list(self.wire.ids.yes)

    # --- lifecycle -------------------------------------------------------------------------
    async def _probe_fetch(self, method: str, url: str, body: Any = None) -> tuple[int, str, Any]:
        status, text, headers = await self._fetch(method, url, body, timeout=self.ready_timeout)
        self._note_simulated(headers)
        return status, text, headers

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
                problem = await readiness(self._probe_fetch, server, self.protocol.ready_paths(server))
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
        await self._learn(answered[0])

    async def _learn(self, server: str) -> None:
        """Server kind (when auto) and yes/no token ids (when not given), from the server itself."""
        if self.detect:
            self.wire.server_kind = await detect_kind(self._probe_fetch, server)
            self.server_info["detected_kind"] = self.wire.server_kind
        self.wire.model = self.model or self._served_model or "default"
        if not self.wire.ids and self.wire.server_kind in ("sglang", "vllm"):
            self.wire.ids = await tokenize_yes_no(self._probe_fetch, server, self.wire.model,
                                                  native=self.protocol.name == "native" and not self.simulated)
        if self.wire.ids:
            self.server_info["yes_no_token_ids"] = {"yes": list(self.wire.ids.yes), "no": list(self.wire.ids.no)}
        elif self.wire.server_kind in ("sglang", "vllm") and not self.simulated:
            print(f"http engine: {redact_url(server)} told no yes/no token ids (no /tokenize, or a router with no "
                  "worker yet): scores come from the top logprobs by word; engine.args yes_token_ids / "
                  "no_token_ids make them exact", file=sys.stderr)
        if self.wire.server_kind in ("sglang", "vllm"):
            self.max_model_len = await context_length(self._probe_fetch, server)
            if self.max_model_len:
                self.server_info["max_model_len"] = self.max_model_len
        if self.wire.server_kind == "sglang":
            flags, advice = await sglang_flags(self._probe_fetch, server, self.protocol.name)
            if flags:
                self.server_info["sglang_flags"] = flags
            for line in advice:
                print(f"http engine: the SGLang server at {redact_url(server)} runs without {line}", file=sys.stderr)

    async def _read_model_info(self, server: str) -> None:
        """Note what the server says it serves; refuse a model it does not serve, or one that cannot see."""
        body = None
        for path in self.protocol.info_paths(server):
            body = await fetch_json(self._probe_fetch, "GET", server + path)
            if isinstance(body, dict):
                break
        if not isinstance(body, dict):
            return
        served = self.protocol.served(body)
        self.server_info.update(served.notes)
        self.simulated = self.simulated or served.simulated
        self._served_model = self._served_model or (served.names[0] if served.names else None)
        problem = None
        if served.takes_images is False:
            problem = f"the model at {redact_url(server)} ({served.notes.get('model_path')}) cannot take images"
        elif served.checks_model and self.model and served.names and self.model not in served.names:
            shown = ", ".join(served.names[:5]) + (" ..." if len(served.names) > 5 else "")
            problem = (f"the server at {redact_url(server)} does not serve the model {self.model!r} (it serves: "
                       f"{shown}); pass --model with one of those, or leave it out")
        if problem:
            await self.close()
            raise RunError(problem)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            api=self.api,
            server_kind=self.server_kind,
            servers=[redact_url(s) for s in self.servers],
            requests_per_server={redact_url(s): n for s, n in self._sent.items()},
            api_key_env=self.api_key_env,  # the variable's name, never its value
            gpus=len(self.servers) or 1,  # at least one per server (cost.gpus says more)
        )
        if self.server_info:
            info["server_info"] = dict(self.server_info)
        info.update(self.protocol.describe(self.wire))
        return info

    # --- routing ---------------------------------------------------------------------------
    def _pick(self, image: bytes | None) -> str:
        """The image's own server (by its digest, computed once per image), unless it is down or saturated;
        then the least-loaded server that is up."""
        now = time.monotonic()
        up = [s for s in self.servers if self._down_until[s] <= now] or self.servers
        home = self.servers[int(image_digest(image)[:8], 16) % len(self.servers)] if image else self.servers[0]
        fair_share = max(1, self.concurrency // len(self.servers))
        if home in up and self._in_flight[home] < 2 * fair_share:
            return home
        return min(up, key=lambda s: self._in_flight[s])

    # --- one request -----------------------------------------------------------------------
    def native_body(self, request: Request) -> dict[str, Any]:
        return native_body(self.wire, request)

    def chat_body(self, request: Request) -> dict[str, Any]:
        if self.wire.model == "default" and (self.model or self._served_model):
            self.wire.model = self.model or self._served_model or "default"
        return chat_body(self.wire, request)

    def body(self, request: Request) -> dict[str, Any]:
        """The body of this engine's protocol (through the methods above, which tests may replace)."""
        return self.native_body(request) if self.protocol.name == "native" else self.chat_body(request)

    async def generate(self, requests: list[Request],
                       on_result: Callable[[int, Result], None] | None = None) -> list[Result]:
        """On a real SGLang server's native protocol, one image's questions of one kind go as one call
        (`http_batch`); anything a batch cannot carry, or a batch that fails, goes through the base class's
        loop, request by request with its timeouts and retries, so a fault costs a retry, never another answer."""
        if self.batch and self.protocol.name == "native" and not self.simulated and not self._stopped:
            body = batch_body([self.body(r) for r in requests])
            results = await self._send_batch(requests, body) if body is not None else None
            if results is not None:
                for i, result in enumerate(results):
                    if on_result is not None:
                        on_result(i, result)
                return results
        return await super().generate(requests, on_result)

    async def _send_batch(self, requests: list[Request], body: dict[str, Any]) -> list[Result] | None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        server = self._pick(requests[0].image)
        started = time.perf_counter()
        async with self._semaphore:  # a batch holds one place of engine.concurrency
            self.calls += len(requests)
            try:
                async with asyncio.timeout(self.timeout):
                    payload = await self._post(server, "/generate", json.dumps(body).encode(),
                                               routing_key(requests[0]), len(requests), refusals=False)
            except TimeoutError:
                return None
            except EngineError as exc:
                if not exc.transient:  # e.g. sglang-router 0.3.2: 422, `text` must be a string
                    self.batch = False
                    print(f"http engine: a batch /generate was refused ({exc}); one call per question from now on",
                          file=sys.stderr)
                return None
        answers = batch_answers(payload, len(requests))
        if answers is None:
            return None
        latency = round(time.perf_counter() - started, 6)
        results = []
        for request, answer in zip(requests, answers):
            try:
                result = self.protocol.read(answer, request, self.wire)
            except EngineError:
                return None
            result.latency = latency
            results.append(result)
        return results

    async def _generate_one(self, request: Request) -> Result:
        if self._stopped:
            raise EngineStop(self._stopped)
        server = self._pick(request.image)
        if self.max_model_len and request.image is None and request.max_tokens * 4 >= self.max_model_len:
            request = await fit_context(self._probe_fetch, server, self.wire, request, self.max_model_len)
        started = time.perf_counter()
        payload = await self._post(server, self.protocol.path(server), self._bytes.encode(self.wire, request),
                                   routing_key(request))
        if not isinstance(payload, dict):
            raise EngineError(f"unexpected answer from {redact_url(server)}: {str(payload)[:80]!r}", transient=True)
        result = self.protocol.read(payload, request, self.wire)
        result.latency = round(time.perf_counter() - started, 6)
        return result
