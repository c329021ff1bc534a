"""Source readers: each yields `Item`s (key, original bytes, reference, human labels) as a stream."""

from builder.sources.base import Source, open_source

__all__ = ["Source", "open_source"]
