"""Engines: one backend per module behind the `Engine` interface, found through the registry."""

from builder.engines.base import Engine, EngineError, Request, Result
from builder.engines.registry import available_engines, create_engine, register

__all__ = ["Engine", "EngineError", "Request", "Result", "available_engines", "create_engine", "register"]
