"""Checks an engine needs before it starts, each a second or less and none sending a model request.

Without them a missing GPU, package or model ends minutes later (Hub HEAD retries, then
'cannot load the processor'). Each check returns problems as one line naming what to do.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from builder.errors import UserError
from builder.recipe.kinds import ENGINES

HUB = "https://huggingface.co"
IN_PROCESS = ("sglang", "transformers")  # engines that load the model here: packages and weights are checked


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the Hub endpoint accepts a TCP connection; otherwise why not (DNS, refused, offline)."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return "HF_HUB_OFFLINE is set"
    url = urlparse(os.environ.get("HF_ENDPOINT") or HUB)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host} is not reachable ({exc.strerror or type(exc).__name__})"


def _in_hub_cache(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a core dependency
        return False
    try:
        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # not a valid repo id: not cached
        return False


def check_model(model: str | None, kind: str) -> None:
    """A local dir that exists, a Hub id already cached, or a Hub id with the Hub reachable."""
    if not model:
        raise UserError(f"engine {kind!r} needs a model: --model ID_OR_DIR (or engine.model)")
    path = Path(model).expanduser()
    if path.exists():
        return
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UserError(f"engine {kind!r}: model folder not found: {model}")
    if _in_hub_cache(model):
        return
    why = hub_reachable()
    if why:
        raise UserError(f"engine {kind!r}: model {model!r} is not in the local Hugging Face cache and cannot be "
                        f"downloaded ({why}); download it on a connected machine or pass a local folder")


def check_packages(kind: str) -> None:
    """The packages the engine kind needs (as its registry entry lists them), found without importing them."""
    entry = ENGINES.get(kind)
    missing = entry.missing()
    if missing:
        raise UserError(f"engine {kind!r} needs {', '.join(missing)}: {entry.install_hint()}")


def check_gpu(kind: str, device: str | None = None) -> None:
    """A CUDA GPU, unless the engine is told to run on the CPU (SGLang's CPU backend: `engine.args.device: cpu`)."""
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"engine {kind!r} needs a CUDA GPU and none is visible; on this machine use "
                        "--engine http --server URL (a GPU server elsewhere), --engine transformers (CPU, slow), "
                        "or engine.args.device: cpu (SGLang's CPU backend)")


def check_servers(servers: list[str], api_key_env: str | None) -> None:
    """http engine: at least one well-formed URL, and the API-key variable set when one is named."""
    if not servers:
        raise UserError("engine 'http' needs at least one server: --server http://HOST:PORT (or engine.servers)")
    for url in servers:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UserError(f"engine.servers: {url!r} is not an http(s) URL (e.g. http://gpu1:30000)")
        try:
            parsed.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise UserError(f"engine.servers: {url!r}: {exc}") from exc
    if api_key_env and not os.environ.get(api_key_env):
        raise UserError(f"engine.api_key_env: the environment variable {api_key_env} is not set")


def check_engine(kind: str, model: str | None, servers: list[str] | None = None,
                 api_key_env: str | None = None, args: dict | None = None) -> None:
    """Everything one engine kind needs, checked locally and quickly; raises UserError."""
    if kind == "http":
        check_servers(list(servers or []), api_key_env)
    elif kind in IN_PROCESS:
        check_packages(kind)
        if kind == "sglang":
            check_gpu(kind, (args or {}).get("device"))
        check_model(model, kind)
