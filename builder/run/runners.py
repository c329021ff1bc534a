"""Pick how a build runs: one process, one static part of an array job, or a Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.recipe.model import LoadedRecipe
from builder.run.build import Builder

RUNNERS = ("local", "ray")


def make_builder(loaded: LoadedRecipe, out: Path | str, runner: str = "local", part: str | None = None,
                 address: str | None = None, workers: int | None = None, **kwargs: Any) -> Builder:
    """A builder with `check()` and `run()`; options that do not fit the runner are errors, not ignored."""
    if runner not in RUNNERS:
        raise UserError(f"--runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if runner == "ray":
        if part:
            raise UserError("--part is for array jobs without Ray; --runner ray splits the work itself")
        from builder.run.ray_runner import RayBuilder, import_ray

        import_ray()
        return RayBuilder(loaded, out, address=address, workers=workers, **kwargs)
    if address or workers:
        raise UserError("--address and --workers need --runner ray")
    if part:
        from builder.run.parts import PartBuilder
        from builder.run.shards import parse_part

        return PartBuilder(loaded, out, parse_part(part), **kwargs)
    return Builder(loaded, out, **kwargs)
