"""What SGLang's `generate` takes for one request, shared by the in-process engine and `/generate`.

Both take the same sampling params and the same top-level logprob fields; only the prompt and
image fields differ (rendered prompt + raw bytes in process, text + data URL over HTTP).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from builder.engines.base import Request
from builder.prompts.constraints import subset_ebnf, yesno_regex
from builder.prompts.scoring import YesNoIds


def canonical_json(schema: str) -> str:
    """A JSON schema string serialized deterministically (SGLang caches grammars by the exact string)."""
    if not schema:
        return '{"type":"object"}'
    try:
        return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))
    except json.JSONDecodeError:
        return schema


def sglang_fields(request: Request, ids: YesNoIds, top_logprobs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sampling_params, top-level fields) for one request.

    Yes/no with logprobs asks for the yes/no token ids when they are known (`token_ids_logprob`),
    otherwise for the top logprobs, from which the score is read.
    """
    constraint = request.constraint
    params: dict[str, Any] = {"max_new_tokens": request.max_tokens, "temperature": request.temperature,
                              "top_p": request.top_p, "top_k": request.top_k,
                              "repetition_penalty": request.repetition_penalty}
    fields: dict[str, Any] = {}
    if request.seed is not None:
        params["sampling_seed"] = request.seed
    if constraint.kind == "subset":
        params["ebnf"] = subset_ebnf(constraint.options)
    elif constraint.kind == "json_schema":
        params["json_schema"] = canonical_json(constraint.schema)
    elif constraint.kind == "yesno":
        if request.logprobs:
            params["max_new_tokens"] = 1
            fields["return_logprob"] = True
            if ids:
                fields["token_ids_logprob"] = ids.all()
            else:
                fields["top_logprobs_num"] = top_logprobs
        else:
            params["regex"] = yesno_regex()
            params["max_new_tokens"] = max(request.max_tokens, 2)
    return params, fields


# Keyword arguments of `SglangEngine` that are ours, not ServerArgs fields.
OWN_ARGS = frozenset({"max_pixels", "engine_factory", "processor_factory", "backoff", "max_restarts"})


@cache
def server_arg_names() -> frozenset[str]:
    """ServerArgs field names of the pinned sglang (shipped list; a contract test checks it against the wheel)."""
    text = resources.files("builder.engines").joinpath("sglang_server_args.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def unknown_server_args(args: dict[str, Any]) -> list[str]:
    """`engine.args` names the sglang engine would pass to `sglang.Engine` but SGLang does not define."""
    return sorted(k for k in args if k not in OWN_ARGS and k not in server_arg_names())
