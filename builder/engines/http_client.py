"""The http engine's calls: one `aiohttp.ClientSession` for every request, its headers, one call, one POST.

aiohttp rather than httpx: at 128 requests in flight httpx's pool spent most of the client's time assigning
requests to connections; the saturation benchmark measured about 8x more requests/s with aiohttp. `post`
decides which failures are transient (timeouts, connection errors, 429, 5xx) and which are not (other 4xx),
and stops a run whose first requests are all refused.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import aiohttp

from builder.engines.base import EngineError, EngineStop
from builder.engines.http_servers import error_message
from builder.errors import RunError
from builder.recipe.model import redact_url

# Client errors that no retry mends: when the first requests all end in one of these, the rest would too.
REFUSED = (400, 401, 403, 404, 422)
REFUSALS_TO_STOP = 3
SIM_HEADER = "x-tagllm-simulated"  # `tagllm serve-sim` marks its answers


class HttpCalls:
    """The calling side of `HttpEngine` (which holds the servers, counters and settings these read)."""

    api_key_env: str | None
    simulated: bool
    timeout: float
    concurrency: int
    _client: aiohttp.ClientSession | None
    _in_flight: dict[str, int]
    _sent: dict[str, int]
    _down_until: dict[str, float]
    _answered: int
    _refused: list[str]
    _stopped: str | None

    def _note_simulated(self, headers: Any) -> None:
        if headers.get(SIM_HEADER):
            self.simulated = True  # `tagllm serve-sim` answers: labels are simulated, say so

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

    async def _fetch(self, method: str, url: str, body: Any = None, timeout: float | None = None,
                     headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
        """(status, text, headers) of one call; aiohttp errors propagate to the caller."""
        assert self._client is not None
        kwargs: dict[str, Any] = {}
        if isinstance(body, bytes):  # already JSON (`BodyBytes`)
            kwargs["data"] = body
            headers = {**(headers or {}), "Content-Type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        if headers:
            kwargs["headers"] = headers
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self._client.request(method, url, **kwargs) as response:
            # JSON is UTF-8: decode it as such (aiohttp's text() may guess a charset for every answer)
            return response.status, (await response.read()).decode("utf-8", "replace"), response.headers

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def _post(self, server: str, path: str, body: bytes, headers: dict[str, str] | None, items: int = 1,
                    refusals: bool = True) -> Any:
        """The decoded JSON answer of one call; raises EngineError (transient or not) for what failed."""
        if self._client is None:
            self._client = self._make_client()
        self._in_flight[server] += items
        self._sent[server] += items
        try:
            status, text, answer_headers = await self._fetch("POST", server + path, body, headers=headers)
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise EngineError(f"timeout talking to {redact_url(server)} ({type(exc).__name__})",
                              transient=True) from exc
        except aiohttp.ClientError as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):
                self._down_until[server] = time.monotonic() + 2.0
            raise EngineError(f"{type(exc).__name__} from {redact_url(server)}: {exc}", transient=True) from exc
        finally:
            self._in_flight[server] -= items
        self._note_simulated(answer_headers)
        if status >= 400:
            message = f"HTTP {status} from {redact_url(server)}: {error_message(status, text)}"
            if refusals and status in REFUSED and not self._answered:
                self._refused.append(message)
                if len(self._refused) >= REFUSALS_TO_STOP:
                    self._stopped = (f"the first {len(self._refused)} requests were all refused ({message}); "
                                     "stopped instead of sending the rest: fix the request settings, then rerun")
                    raise EngineStop(self._stopped)
            raise EngineError(message, transient=status == 429 or status >= 500)
        self._answered += 1
        try:
            return json.loads(text)
        except ValueError as exc:
            raise EngineError(f"malformed JSON from {redact_url(server)}: {text[:80]!r}", transient=True) from exc
