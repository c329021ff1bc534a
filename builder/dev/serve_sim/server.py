"""The request handlers and their shared state: model, oracle, options, counters, injected faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

from aiohttp import web

from builder.dev.serve_sim.options import FAULT_KINDS, OWNER, SIM_HEADER, BadRequest, SimOptions, SimStats
from builder.dev.serve_sim.oracle import image_key
from builder.dev.serve_sim.parse import parse_chat, parse_native
from builder.dev.serve_sim.reply import chat_answer, native_answer
from builder.engines.simulated import SimulatedModel
from builder.prompts.constraints import Constraint


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
        self._recent_images: OrderedDict[str, None] = OrderedDict()

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
            parsed = parse_native(body, self._vocab_names) if native else parse_chat(body, self._vocab_names)
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
        if native:
            return web.json_response(native_answer(answer, parsed, self.options.latency))
        return web.json_response(chat_answer(answer, parsed, self.options.model_name))

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
                if key is not None:
                    self._count_prefix(key)
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

    def _count_prefix(self, key: str) -> None:
        """An LRU of image hashes stands in for a server's prefix cache of image tokens."""
        if key in self._recent_images:
            self._recent_images.move_to_end(key)
            self.stats.image_prefix_hits += 1
            return
        self.stats.image_prefix_misses += 1
        if self.options.prefix_cache_images > 0:
            self._recent_images[key] = None
            while len(self._recent_images) > self.options.prefix_cache_images:
                self._recent_images.popitem(last=False)

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



SIM_KEY: web.AppKey[SimServer] = web.AppKey("tagllm_sim", SimServer)
