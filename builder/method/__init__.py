"""Tagging strategies: turn one prepared image into one record through engine requests."""

from builder.method.base import Strategy, TaggingContext
from builder.method.strategies import make_strategy

__all__ = ["Strategy", "TaggingContext", "make_strategy"]
