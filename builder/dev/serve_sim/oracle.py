"""The oracle: which human labels belong to the image a request carries (by the sha256 of its bytes)."""

from __future__ import annotations

from typing import Any

from builder.images import image_digest


def image_key(data: bytes) -> str:
    return image_digest(data)  # memoized: the simulated model hashes the same bytes again


def build_oracle(loaded: Any) -> dict[str, list[str] | None]:
    """sha256 of each item's engine image (as a build prepares it) -> the item's human labels."""
    from builder.images import ImageProblem, prepare_image
    from builder.sources import open_source

    recipe = loaded.recipe
    oracle: dict[str, list[str] | None] = {}
    for item in open_source(recipe.source, loaded.vocab, loaded.base_dir):
        if item.image is None:
            continue
        try:
            prepared = prepare_image(item.image, recipe.engine.max_pixels, recipe.output.max_image_pixels)
        except ImageProblem:
            continue
        oracle[image_key(prepared.data)] = item.reference
    return oracle
