"""Engine registry: names map to backend classes, imported only when chosen (heavy deps stay lazy)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from builder.engines.base import Engine
from builder.errors import UserError

_REGISTRY: dict[str, str] = {
    "simulated": "builder.engines.simulated:SimulatedEngine",
    "http": "builder.engines.http:HttpEngine",
    "transformers": "builder.engines.transformers_engine:TransformersEngine",
    "sglang": "builder.engines.sglang_engine:SglangEngine",
}


def register(name: str, target: str) -> None:
    """Add a backend: `target` is 'module:Class'."""
    _REGISTRY[name] = target


def available_engines() -> list[str]:
    return sorted(_REGISTRY)


def engine_class(name: str) -> type[Engine]:
    if name not in _REGISTRY:
        raise UserError(f"unknown engine {name!r}; choose one of: {', '.join(available_engines())}")
    module_name, _, class_name = _REGISTRY[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"engine {name!r} is not available: {exc}") from exc
    return getattr(module, class_name)


def create_engine(name: str, **kwargs: Any) -> Engine:
    return engine_class(name)(**kwargs)


def engine_from_spec(spec: Any, vocab: Any, kind: str | None = None) -> Engine:
    """Build the engine a recipe's `engine` section describes (`kind` overrides spec.kind).

    Only the simulated engine takes the vocabulary (to read questions as a model would)."""
    kind = kind or spec.kind
    common = dict(model=spec.model, concurrency=spec.concurrency, timeout=spec.timeout, retries=spec.retries)
    if kind == "simulated":
        from builder.engines.simulated import NoiseModel

        sim = spec.simulation.model_dump()
        sim.pop("allow_unlabeled", None)  # read by the build's preflight, not by the noise model
        extra = {k: sim.pop(k) for k in ("latency", "crash_every")}
        return create_engine(kind, vocab=vocab, noise=NoiseModel(**sim), **extra, **spec.args, **common)
    if kind == "http":
        return create_engine(kind, servers=list(spec.servers), api=spec.api, api_key_env=spec.api_key_env,
                             **spec.args, **common)
    from builder.engines.preflight import check_engine

    check_engine(kind, spec.model, args=spec.args)  # GPU, packages, weights: seconds, not minutes of retries
    args = dict(spec.args)
    if kind == "sglang":
        args.setdefault("max_pixels", spec.max_pixels)
    return create_engine(kind, **args, **common)


def choose_engine_kind(kind: str) -> str:
    """'auto' means sglang when it is installed and a GPU is visible; otherwise say what to pick."""
    if kind != "auto":
        return kind
    if importlib.util.find_spec("sglang") is not None and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "sglang"
    raise UserError(
        "engine 'auto' needs sglang and a GPU (pip install -e '.[sglang]' in a checkout); otherwise choose "
        "--engine http --server URL, --engine transformers --model DIR, or --engine simulated"
    )


def open_engine(spec: Any, vocab: Any) -> Engine:
    """The engine a recipe's `engine` section names, with 'auto' resolved first (not started yet)."""
    return engine_from_spec(spec, vocab, choose_engine_kind(spec.kind))


def check_engine_spec(spec: Any) -> None:
    """Problems a recipe's engine section would only show on the GPU machine, raised now (recipe check)."""
    if spec.kind == "sglang":
        from builder.engines.sglang_params import unknown_server_args

        unknown = unknown_server_args(dict(spec.args))
        if unknown:
            raise UserError(f"engine.args: {', '.join(unknown)}: not a field of sglang's ServerArgs "
                            f"(see `sglang serve --help`)")
