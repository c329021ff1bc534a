"""Run inside a subprocess by test_sglang_classes.py: validate request bodies with sglang's own classes.

argv: the unpacked wheel root, the folder holding what those classes import (openai, pybase64, ...).
stdin: JSON {"chat": [[name, body], ...], "sampling": [[name, params], ...]}.
stdout: JSON {name: [problems]} (an empty list = accepted).

Only the modules needed are loaded: the `sglang` package `__init__`s (which pull in the whole
runtime) are replaced by empty package objects pointing at the wheel's folders.
"""

from __future__ import annotations

import importlib
import json
import sys
import types


def load(root: str, deps: str) -> tuple[type, type]:
    sys.path.append(deps)  # after our own packages: only what is missing comes from here
    sys.path.insert(0, root)
    for name in ("sglang", "sglang.srt", "sglang.srt.entrypoints", "sglang.srt.entrypoints.openai",
                 "sglang.srt.sampling"):
        package = types.ModuleType(name)
        package.__path__ = [f"{root}/{name.replace('.', '/')}"]
        sys.modules[name] = package
    protocol = importlib.import_module("sglang.srt.entrypoints.openai.protocol")
    sampling = importlib.import_module("sglang.srt.sampling.sampling_params")
    return protocol.ChatCompletionRequest, sampling.SamplingParams


def main() -> None:
    chat_cls, sampling_cls = load(sys.argv[1], sys.argv[2])
    data = json.load(sys.stdin)
    out: dict[str, list[str]] = {}
    for name, body in data["chat"]:
        problems = [f"{k} (not a ChatCompletionRequest field: sglang would ignore it)"
                    for k in body if k not in chat_cls.model_fields]
        try:
            chat_cls.model_validate(body)
        except Exception as exc:  # pydantic ValidationError or sglang's own validators
            problems.append(f"rejected: {str(exc).splitlines()[0]}")
        out[name] = problems
    for name, params in data["sampling"]:
        problems = []
        try:
            sampling_cls(**params).verify(32000)
        except Exception as exc:
            problems.append(f"rejected: {type(exc).__name__}: {exc}")
        out[name] = problems
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
