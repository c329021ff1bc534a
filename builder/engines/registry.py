"""Engines by name: the kinds come from `recipe.kinds.ENGINES`; each class is imported only when chosen
(heavy dependencies stay lazy), and `engine_from_spec` builds the one a recipe's engine section describes."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from builder.engines.base import Engine
from builder.engines.references import MakeReferences, References
from builder.errors import UserError
from builder.recipe.kinds import ENGINES, Kind


def register(name: str, target: str, about: str = "", needs: tuple[str, ...] = (), extra: str | None = None) -> None:
    """Add a backend: `target` is 'module:Class' (an `Engine`). A recipe may name it from then on."""
    ENGINES.register(Kind(name, about or f"engine {target}", target, tuple(needs), extra))


def available_engines() -> list[str]:
    return ENGINES.names()


def engine_class(name: str) -> type[Engine]:
    return ENGINES.load(name)


def create_engine(name: str, **kwargs: Any) -> Engine:
    return engine_class(name)(**kwargs)


def engine_from_spec(spec: Any, vocab: Any, kind: str | None = None,
                     references: References | MakeReferences | None = None) -> Engine:
    """Build the engine a recipe's `engine` section describes (`kind` overrides spec.kind).

    Only the simulated engine takes the vocabulary (to read questions as a model would) and
    `references`, the human labels it answers from (by image digest, or a function making them
    at its start: `engines.references.source_references`); a real engine never sees them."""
    kind = kind or spec.kind
    common = dict(model=spec.model, concurrency=spec.concurrency, timeout=spec.timeout, retries=spec.retries)
    if kind == "simulated":
        from builder.engines.simulated import NoiseModel

        sim = spec.simulation.model_dump()
        sim.pop("allow_unlabeled", None)  # read by the build's preflight, not by the noise model
        extra = {k: sim.pop(k) for k in ("latency", "crash_every")}
        return create_engine(kind, vocab=vocab, noise=NoiseModel(**sim), references=references, **extra,
                             **spec.args, **common)
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


def open_engine(spec: Any, vocab: Any, references: References | MakeReferences | None = None) -> Engine:
    """The engine a recipe's `engine` section names, with 'auto' resolved first (not started yet)."""
    return engine_from_spec(spec, vocab, choose_engine_kind(spec.kind), references=references)


def check_engine_spec(spec: Any) -> None:
    """Problems a recipe's engine section would only show on the GPU machine, raised now (recipe check)."""
    if spec.kind == "sglang":
        from builder.engines.sglang_params import unknown_server_args

        unknown = unknown_server_args(dict(spec.args))
        if unknown:
            raise UserError(f"engine.args: {', '.join(unknown)}: not a field of sglang's ServerArgs "
                            f"(see `sglang serve --help`)")
