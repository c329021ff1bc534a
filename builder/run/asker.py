"""Send requests through the cache to the engine, and re-ask when an answer does not parse.

Only answers that parse are cached, so a resumed or retried run asks again for anything that
failed. A re-ask changes the seed (and samples) so a greedy model gets a chance to answer
differently; after `parse_retries` the request counts as a parse failure.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from builder.engines.base import Engine, Request, Result
from builder.method.answers import Answer
from builder.prompts.constraints import ParseError
from builder.run.cache import RequestCache, request_key


class Asker:
    def __init__(self, engine: Engine, cache: RequestCache | None, vocab_digest: str, parse_retries: int = 2,
                 gpus: int = 1):
        self.engine = engine
        self.gpus = gpus
        self._busy = BusyClock()
        self.cache = cache
        self.vocab_digest = vocab_digest
        self.parse_retries = parse_retries
        self.engine_id = _engine_id(engine)
        self.counts: Counter[str] = Counter()

    async def ask(self, requests: list[Request], parse: Callable[[Request, Result], Any]) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(requests)
        keys = [request_key(r, self.engine_id, self.vocab_digest) for r in requests]
        todo: list[int] = []
        for i, (request, key) in enumerate(zip(requests, keys)):
            cached = self.cache.get(key) if self.cache else None
            if cached is not None:
                try:
                    answers[i] = Answer(request, cached, parse(request, cached), cached=True)
                    self.counts["cache_hits"] += 1
                    continue
                except ParseError:
                    pass
            todo.append(i)
        attempt = 0
        pending = {i: requests[i] for i in todo}
        spent: Counter[int] = Counter()  # busy time of answers that did not parse and were re-asked
        while pending:
            batch = list(pending.items())
            retry: dict[int, Request] = {}

            def settle(j: int, result: Result, batch=batch, retry=retry, attempt=attempt, spent=spent) -> None:
                """Parse and cache each answer the moment it arrives."""
                i, sent = batch[j]
                spent[i] += self._busy.share() * self.gpus
                result.gpu_seconds, result.gpus = round(spent[i], 6), self.gpus
                self.counts["sent"] += result.attempts
                self.counts["retries"] += result.attempts - 1
                if not result.ok:
                    answers[i] = Answer(requests[i], result, reason="engine")
                    return
                try:
                    value = parse(sent, result)
                except ParseError as exc:
                    if attempt < self.parse_retries:
                        retry[i] = _reask(requests[i], attempt + 1)
                        self.counts["parse_retries"] += 1
                    else:
                        result.error = f"answer does not fit the constraint: {exc}"
                        answers[i] = Answer(requests[i], result, reason="parse")
                    return
                if self.cache is not None:
                    self.cache.put(keys[i], result)
                answers[i] = Answer(requests[i], result, value)

            with self._busy:
                await self.engine.generate([r for _, r in batch], on_result=settle)
            pending = retry
            attempt += 1
        return [a for a in answers if a is not None]


class BusyClock:
    """Splits the time the engine is busy (at least one request out) among the answers, in arrival
    order: each answer gets the busy time since the previous one, so the shares add up to the
    engine's busy wall time however many requests run concurrently."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last = 0.0

    def __enter__(self) -> BusyClock:
        if self.in_flight == 0:
            self.last = time.perf_counter()
        self.in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1

    def share(self) -> float:
        now = time.perf_counter()
        share, self.last = now - self.last, now
        return share


def _reask(request: Request, attempt: int) -> Request:
    return dataclasses.replace(request, seed=(request.seed or 0) + 1000 * attempt,
                               temperature=max(request.temperature, 0.7))


def _engine_id(engine: Engine) -> str:
    import json

    info = engine.describe()
    keep = {k: info.get(k) for k in ("engine", "model", "noise")}
    return json.dumps(keep, sort_keys=True, default=str)
