"""Asking the engine: the asker (cache first, then the engine, re-asks) and the request caches it reads."""
