"""Render chat messages from Jinja templates, in the order that keeps prefix caching effective.

Order: system prompt, then the image, then the question. Every request about one image shares the
system+image prefix, so a server with a prefix cache (SGLang's radix cache) encodes it once.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from builder.errors import UserError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@lru_cache(maxsize=64)
def _builtin(name: str) -> str:
    return resources.files("builder.prompts").joinpath("templates", name).read_text(encoding="utf-8")


@lru_cache(maxsize=64)
def _compiled(source: str) -> jinja2.Template:
    """Templates are compiled once per process: every build and calibration round reuses them."""
    return _ENV.from_string(source)


class Template:
    """A Jinja template from a file or a built-in name; errors name the file."""

    def __init__(self, source: str, origin: str):
        self.origin = origin
        self.source = source
        try:
            self._template = _compiled(source)
        except jinja2.TemplateSyntaxError as exc:
            raise UserError(f"{origin}: line {exc.lineno}: template error: {exc.message}") from exc

    @classmethod
    def load(cls, path: Path | None, builtin: str) -> Template:
        if path is None:
            return cls(_builtin(builtin), f"builtin:{builtin}")
        if not path.is_file():
            raise UserError(f"{path}: template file not found")
        return cls(path.read_text(encoding="utf-8"), str(path))

    def render(self, **values: Any) -> str:
        try:
            return self._template.render(**values).strip()
        except jinja2.UndefinedError as exc:
            raise UserError(f"{self.origin}: {exc.message}") from exc


def chat(system: str, question: str) -> list[dict[str, Any]]:
    """Messages with the image between the system prompt and the question."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]})
    return messages


def without_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages without image parts (for text-only requests such as calibration)."""
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [p for p in content if p.get("type") != "image"]
        out.append({**message, "content": content})
    return out
