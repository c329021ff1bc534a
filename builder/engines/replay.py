"""An engine that only replays the request cache: re-thresholding must never reach a model."""

from __future__ import annotations

from typing import Any

from builder.engines.base import Engine, EngineError, Request, Result


class ReplayEngine(Engine):
    """Presents the identity of the engine that built the output, so cache keys match."""

    name = "replay"

    def __init__(self, identity: dict[str, Any], **kwargs: Any):
        super().__init__(model=identity.get("model"), retries=0, **kwargs)
        self.identity = identity
        self.simulated = bool(identity.get("simulated"))

    def describe(self) -> dict[str, Any]:
        return dict(self.identity)

    async def _generate_one(self, request: Request) -> Result:
        raise EngineError(f"{request.tag}: answer not in the request cache (relabel never calls the engine)")
