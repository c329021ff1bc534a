"""What the method gets back for each request, and what it needs from whoever sends its requests.

The method only builds requests and parses answers; sending them (cache, engine, re-asks) is the
run's job (`builder.ask.asker.Asker`), handed in as an `Ask`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from builder.engines.base import Request, Result


@dataclass
class Answer:
    request: Request
    result: Result
    value: Any = None
    reason: str | None = None  # "engine", "parse" or "no_score" when failed
    cached: bool = False
    sampled: bool = False  # answered by a sampled variant of the request (see run.asker)

    @property
    def ok(self) -> bool:
        return self.reason is None


class Ask(Protocol):
    async def ask(self, requests: list[Request], parse: Callable[[Request, Result], Any]) -> list[Answer]:
        """One answer per request, in order, parsed by `parse` (or failed with a reason)."""
        ...
