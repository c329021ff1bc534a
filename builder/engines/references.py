"""The human labels a simulated engine answers from, keyed by the digest of the image it is sent.

A simulated engine (in process, or `tagllm serve-sim`) is handed this table when it is built; the
build loop and the requests carry no labels. The key is the sha256 of the engine image, so each
source image is prepared here exactly as a build prepares it (one more decode per image: the price
of keeping labels out of the loop, paid by simulated runs only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from builder.images import ImageProblem, image_digest, prepare_image
from builder.records import Item

if TYPE_CHECKING:
    from builder.recipe.model import LoadedRecipe

References = Mapping[str, list[str] | None]  # sha256 of an engine image -> its human labels (None: unlabeled)
MakeReferences = Callable[[], References]  # made when the engine starts, not when it is built


def reference_labels(items: Iterable[Item], max_pixels: int, limit_pixels: int) -> dict[str, list[str] | None]:
    """sha256 of each item's engine image -> its human labels; unreadable items are left out."""
    table: dict[str, list[str] | None] = {}
    for item in items:
        if item.image is None:
            continue
        try:
            prepared = prepare_image(item.image, max_pixels, limit_pixels)
        except ImageProblem:
            continue
        table[image_digest(prepared.data)] = item.reference
    return table


def source_references(loaded: LoadedRecipe) -> dict[str, list[str] | None]:
    """`reference_labels` of the recipe's whole source (after `source.limit`), prepared with its pixel limits."""
    from builder.sources import open_source

    recipe = loaded.recipe
    return reference_labels(open_source(recipe.source, loaded.vocab, loaded.base_dir), recipe.engine.max_pixels,
                            recipe.output.max_image_pixels)
