"""The http engine's two wire protocols, one object each: where to ask, what to send, how to read.

`Native` is SGLang's own `POST /generate` (readiness on `/ready` or `/health`, the model on
`/model_info`); `Chat` is the OpenAI-compatible `POST /v1/chat/completions` (readiness and models on
`/v1/models`). The engine holds one and never branches on the protocol itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from builder.engines.base import Request, Result
from builder.engines.http_servers import v1
from builder.engines.http_wire import Wire, chat_body, native_body, read_chat, read_native

SIM_OWNER = "tagllm-serve-sim"


@dataclass
class Served:
    """What a server says it serves: notes for the engine's description, the model names it answers to."""

    notes: dict[str, Any] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    simulated: bool = False
    takes_images: bool | None = None
    checks_model: bool = False  # whether requests name the model (so a name it does not serve fails them)


class Native:
    name = "native"

    def ready_paths(self, server: str) -> list[str]:
        return ["/ready", "/health"]

    def info_paths(self, server: str) -> list[str]:
        return ["/model_info", "/get_model_info"]  # sglang-router answers the second one only

    def served(self, body: dict[str, Any]) -> Served:
        keys = ("model_path", "served_model_name", "has_image_understanding", "model_type")
        names = [str(body[k]) for k in ("served_model_name", "model_path") if body.get(k)]
        return Served(notes={k: body[k] for k in keys if k in body}, names=names, simulated=bool(body.get("simulated")),
                      takes_images=body.get("has_image_understanding"))

    def path(self, server: str) -> str:
        return "/generate"

    def body(self, wire: Wire, request: Request) -> dict[str, Any]:
        return native_body(wire, request)

    def read(self, payload: dict[str, Any], request: Request, wire: Wire) -> Result:
        return read_native(payload, request, wire.ids)

    def describe(self, wire: Wire) -> dict[str, Any]:
        return {"chat_template": "custom" if wire.chat_template else "generic-chatml", "image_token": wire.image_token}


class Chat:
    name = "openai"

    def ready_paths(self, server: str) -> list[str]:
        return [v1(server, "/models")]

    def info_paths(self, server: str) -> list[str]:
        return [v1(server, "/models")]

    def served(self, body: dict[str, Any]) -> Served:
        data = [d for d in body.get("data") or [] if isinstance(d, dict)]
        names = [str(d.get("id")) for d in data]
        notes = {"served_models": names[:10]} if names else {}
        return Served(notes=notes, names=names, simulated=any(d.get("owned_by") == SIM_OWNER for d in data),
                      checks_model=True)

    def path(self, server: str) -> str:
        return v1(server, "/chat/completions")

    def body(self, wire: Wire, request: Request) -> dict[str, Any]:
        return chat_body(wire, request)

    def read(self, payload: dict[str, Any], request: Request, wire: Wire) -> Result:
        return read_chat(payload, request, wire)

    def describe(self, wire: Wire) -> dict[str, Any]:
        return {}


PROTOCOLS: dict[str, Native | Chat] = {"http-sglang": Native(), "openai": Chat(), "vllm": Chat()}
