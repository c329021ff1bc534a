"""Send requests through the cache to the engine, and re-ask when an answer does not parse.

Faults cost retries, never different answers: an answer that does not fit its constraint (empty,
malformed, outside the label set) is re-asked with the *identical* request, up to `parse_retries`
times. Only after that, and only when `sampled_reask` is on, one sampled variant (another seed,
temperature 0.7) is tried, and its answer is marked `sampled` in the raw answers. A yes/no answer
without a usable logprob is `no_score` at once: asking again would get the same answer.

Only answers that parse are cached, so a resumed or retried run asks again for anything that failed.
An ask's answers are stored together when the last of them is in (one cache row per image and kind of
question, see `builder.ask.cache`), not one by one.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from builder.ask.cache import Entries, RequestCache, question_digest, replayed, row_key, stored
from builder.engines.base import Engine, Request, Result
from builder.method.answers import Answer
from builder.prompts.constraints import ParseError
from builder.prompts.scoring import NoScore

SAMPLED_TEMPERATURE = 0.7


class Asker:
    def __init__(self, engine: Engine, cache: RequestCache | None, vocab_digest: str, parse_retries: int = 2,
                 gpus: int = 1, sampled_reask: bool = False):
        self.engine = engine
        self.sampled_reask = sampled_reask
        self.gpus = gpus
        self._busy = BusyClock()
        self.cache = cache
        self.vocab_digest = vocab_digest
        self.parse_retries = parse_retries
        self.engine_id = _engine_id(engine)
        self.counts: Counter[str] = Counter()

    async def ask(self, requests: list[Request], parse: Callable[[Request, Result], Any]) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(requests)
        rows, found = self._lookup(requests)
        todo: list[int] = []
        for i, request in enumerate(requests):
            entry = found[rows[i][0]].get(rows[i][1]) if found and rows[i][0] in found else None
            if entry is not None:
                cached = replayed(entry)
                try:
                    answers[i] = Answer(request, cached, parse(request, cached), cached=True)
                    self.counts["cache_hits"] += 1
                    continue
                except ParseError:
                    pass
            todo.append(i)
        attempt = 0
        pending = {i: requests[i] for i in todo}
        fresh: dict[int, Result] = {}  # answers that parsed, to store
        spent: Counter[int] = Counter()  # busy time of answers that did not parse and were re-asked
        while pending:
            batch = list(pending.items())
            retry: dict[int, Request] = {}

            def settle(j: int, result: Result, batch=batch, retry=retry, attempt=attempt, spent=spent) -> None:
                """Parse each answer the moment it arrives."""
                i, sent = batch[j]
                spent[i] += self._busy.share() * self.gpus
                result.gpu_seconds, result.gpus = round(spent[i], 6), self.gpus
                sampled = sent is not requests[i]
                self.counts["sent"] += result.attempts
                self.counts["retries"] += result.attempts - 1
                if not result.ok:
                    answers[i] = Answer(requests[i], result, reason="engine", sampled=sampled)
                    return
                try:
                    value = parse(sent, result)
                except NoScore as exc:
                    result.error = str(exc)
                    answers[i] = Answer(requests[i], result, reason="no_score", sampled=sampled)
                    return
                except ParseError as exc:
                    again = self._again(requests[i], attempt)
                    if again is not None:
                        retry[i] = again
                        self.counts["parse_retries"] += 1
                    else:
                        result.error = f"answer does not fit the constraint: {exc}"
                        answers[i] = Answer(requests[i], result, reason="parse", sampled=sampled)
                    return
                if not sampled:
                    fresh[i] = result
                answers[i] = Answer(requests[i], result, value, sampled=sampled)

            with self._busy:
                await self.engine.generate([r for _, r in batch], on_result=settle)
            pending = retry
            attempt += 1
        self._store(rows, found, fresh)
        return [a for a in answers if a is not None]

    def _lookup(self, requests: list[Request]) -> tuple[list[tuple[str, str]], dict[str, Entries]]:
        """(row key, question digest) of each request, and the stored answers of each row."""
        rows: list[tuple[str, str]] = []
        found: dict[str, Entries] = {}
        if self.cache is None:  # `is not None`: the truth test of a cache must never count its rows
            return rows, found
        made: dict[tuple[bytes | None, str], str] = {}  # the requests of an ask share one or two rows
        for request in requests:
            question = question_digest(request, self.engine_id, self.vocab_digest)
            owner = (request.image if request.image else question.encode(), request.tag.split(":", 1)[0])
            row = made.get(owner)
            if row is None:
                row = made[owner] = row_key(request, self.engine_id, self.vocab_digest, question)
                entries = self.cache.get(row)
                if entries:
                    found[row] = entries
            rows.append((row, question))
        return rows, found

    def _store(self, rows: list[tuple[str, str]], found: dict[str, Entries], fresh: dict[int, Result]) -> None:
        """One write per row: its earlier answers plus this ask's (an image's answers arrive together)."""
        if self.cache is None or not fresh:
            return
        grown: dict[str, Entries] = {}
        new: Counter[str] = Counter()
        for i, result in fresh.items():
            row, question = rows[i]
            if row not in grown:
                grown[row] = dict(found.get(row, {}))
            grown[row][question] = stored(result)
            new[row] += 1
        for row, entries in grown.items():
            self.cache.put(row, entries, new=new[row])

    def _again(self, request: Request, attempt: int) -> Request | None:
        """The request to send after a malformed answer: the same one, then maybe a sampled one."""
        if attempt < self.parse_retries:
            return request
        if self.sampled_reask and attempt == self.parse_retries:
            self.counts["sampled_reasks"] += 1
            return dataclasses.replace(request, seed=(request.seed or 0) + 1000,
                                       temperature=max(request.temperature, SAMPLED_TEMPERATURE))
        return None


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


def _engine_id(engine: Engine) -> str:
    import json

    info = engine.describe()
    keep = {k: info.get(k) for k in ("engine", "model", "noise")}
    return json.dumps(keep, sort_keys=True, default=str)
