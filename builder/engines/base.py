"""The engine interface: a batch of requests in, one result per request out, never an exception.

The base class owns the loop every backend needs: bounded concurrency, a timeout per request,
retries with backoff on transient failures only, and per-request error isolation. A backend fills
in one hook, `_generate_one` (or overrides `_generate_batch` when it batches on its own device).
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from builder.errors import RunError
from builder.prompts.constraints import Constraint


@dataclass
class Request:
    """One model call: chat messages around one image, a constraint, decoding settings.

    `messages` follow the chat format with the image as a content part `{"type": "image"}`; each
    backend turns that into its own placeholder or image part. `image` holds the prepared
    (normalized) encoded image sent to the model.
    """

    messages: list[dict[str, Any]]
    image: bytes | None
    constraint: Constraint
    max_tokens: int = 64
    temperature: float = 0.0
    logprobs: bool = False  # ask for yes/no token logprobs (stage-2 scores)
    seed: int | None = None  # sent only when set: unseeded requests are what servers handle best
    # Sent explicitly: servers otherwise fill in the model's generation_config defaults.
    top_p: float = 1.0
    top_k: int = -1  # -1: no top-k cut
    repetition_penalty: float = 1.0
    # What it asks, kind first ("subset:vehicle:0", "verify:dog", "open"): named in raw answers and
    # errors; the kind (before the first colon) picks the request's cache row.
    tag: str = ""

    def about(self, image: bytes | None) -> Request:
        """The same question about another image: questions are built once, then sent per image."""
        other = object.__new__(Request)  # a shallow copy, without copy.copy's generic (slow) path
        other.__dict__.update(self.__dict__)
        other.image = image
        return other

    def prompt_text(self) -> str:
        """All text of the messages joined: what a backend without chat templates would see."""
        parts: list[str] = []
        for message in self.messages:
            content = message["content"]
            if isinstance(content, str):
                parts.append(content)
            else:
                parts.extend(p["text"] for p in content if p.get("type") == "text")
        return "\n".join(parts)


@dataclass
class Result:
    text: str = ""
    yes_prob: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    error: str | None = None  # None when ok; otherwise a short reason
    transient: bool = False  # error worth a retry (timeout, 5xx, connection)
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    # Set by the asker when the answer arrives and cached with it, so a replay reports the original
    # cost: this answer's share of the time the engine was busy, times the GPUs behind it.
    gpu_seconds: float = 0.0
    gpus: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class EngineError(Exception):
    """Raised by a backend hook for one failed request. `transient` errors are retried."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class EngineStop(RunError):
    """Raised by a backend hook when no request can succeed (the server refuses them all): the run stops
    with this message instead of sending the rest."""


class EngineDied(EngineError):
    """The backend itself is gone (crashed subprocess, lost GPU): restart it, then retry."""

    def __init__(self, message: str):
        super().__init__(message, transient=True)


class Engine(ABC):
    """Base class for all backends."""

    name = "engine"
    simulated = False  # True only for backends whose answers do not come from a model

    def __init__(
        self,
        model: str | None = None,
        concurrency: int = 32,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_restarts: int = 2,
        **options: Any,
    ):
        self.model = model or ""
        self.concurrency = max(1, int(concurrency))
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_restarts = max_restarts
        self.restarts = 0
        self._restart_lock: asyncio.Lock | None = None
        self.options = options
        self._semaphore: asyncio.Semaphore | None = None
        self.calls = 0  # requests actually sent to the backend, retries included

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model or check the server; raise RunError with a clear message if impossible."""

    async def close(self) -> None:
        """Free the model / connections."""

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def describe(self) -> dict[str, Any]:
        """What the card and stats say about the engine."""
        return {"engine": self.name, "model": self.model, "simulated": self.simulated}

    # --- the loop --------------------------------------------------------------------------
    async def generate(self, requests: list[Request],
                       on_result: Callable[[int, Result], None] | None = None) -> list[Result]:
        """Answer every request; failures come back as results with `error` set.

        `on_result(i, result)` is called as each answer arrives, so callers can store it at once
        (a run killed mid-batch keeps what was already answered).
        """
        if not requests:
            return []
        if on_result is None:
            return await self._generate_batch(requests)
        if type(self)._generate_batch is not Engine._generate_batch:
            results = await self._generate_batch(requests)  # a batching backend answers all at once
            for i, result in enumerate(results):
                on_result(i, result)
            return results

        return list(await asyncio.gather(*(self._with_retries(r, on_result, i) for i, r in enumerate(requests))))

    async def _generate_batch(self, requests: list[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self._with_retries(r) for r in requests)))

    async def _with_retries(self, request: Request, on_result: Callable[[int, Result], None] | None = None,
                            index: int = 0) -> Result:
        """One request to its final result (retried while the failure is transient); `on_result(index, result)`
        is called with it before it is returned."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        attempt = 0
        while True:
            attempt += 1
            async with self._semaphore:
                result = await self._guarded(request)
            result.attempts = attempt
            if result.ok or not result.transient or attempt > self.retries:
                if on_result is not None:
                    on_result(index, result)
                return result
            delay = self.backoff * (2 ** (attempt - 1))
            await asyncio.sleep(delay * (0.5 + random.random()))

    async def _guarded(self, request: Request) -> Result:
        self.calls += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):  # no extra task per request, unlike wait_for
                result = await self._generate_one(request)
        except TimeoutError:
            return Result(error=f"timeout after {self.timeout:g}s", transient=True,
                          latency=time.perf_counter() - started)
        except EngineStop:
            raise
        except EngineDied as exc:
            revived = await self._revive()
            return Result(error=f"engine died: {exc}", transient=revived, latency=time.perf_counter() - started)
        except EngineError as exc:
            return Result(error=str(exc), transient=exc.transient, latency=time.perf_counter() - started)
        except Exception as exc:  # a backend bug or library error must not kill the run
            return Result(error=f"{type(exc).__name__}: {exc}", latency=time.perf_counter() - started)
        if not result.latency:
            result.latency = round(time.perf_counter() - started, 6)  # µs: finer is noise, and costs in every cache row
        return result

    async def _revive(self) -> bool:
        """Restart a dead backend once (concurrent failures share the restart); False past the limit."""
        if self._restart_lock is None:
            self._restart_lock = asyncio.Lock()
        generation = self.restarts
        async with self._restart_lock:
            if self.restarts != generation:
                return True  # another request already restarted it
            if self.restarts >= self.max_restarts:
                return False
            self.restarts += 1
            await self.close()
            await self.start()
            return True

    @abstractmethod
    async def _generate_one(self, request: Request) -> Result:
        """Send one request; return its result or raise EngineError."""
