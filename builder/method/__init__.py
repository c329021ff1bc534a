"""Tagging strategies: turn one prepared image into one record through engine requests."""

from builder.method.base import Strategy, TaggingContext
from builder.method.strategies import STRATEGIES, make_strategy

__all__ = ["STRATEGIES", "Strategy", "TaggingContext", "make_strategy"]
