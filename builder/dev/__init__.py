"""Developer helpers: things tests, demos and CI need that are not part of a build."""

from builder.dev.tiny_vlm import ARCHS, make_tiny_vlm

__all__ = ["ARCHS", "make_tiny_vlm"]
