"""The oracle: which human labels belong to the image a request carries (by the sha256 of its bytes)."""

from __future__ import annotations

from typing import Any

from builder.engines.references import source_references
from builder.images import image_digest


def image_key(data: bytes) -> str:
    return image_digest(data)  # the key `engines.references` gives each engine image


def build_oracle(loaded: Any) -> dict[str, list[str] | None]:
    """sha256 of each item's engine image (as a build prepares it) -> the item's human labels."""
    return source_references(loaded)
