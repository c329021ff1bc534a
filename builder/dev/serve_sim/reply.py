"""Answer bodies in each protocol's shape: SGLang `/generate` meta_info, OpenAI chat completions."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from builder.dev.serve_sim.options import SIM_NO_ID, SIM_YES_ID


def yes_no_logprobs(answer: Any) -> tuple[float, float]:
    """The model's yes/no token logprobs (it gives them whenever logprobs are asked); else a plain guess."""
    lp = answer.extra.get("logprobs") or {}
    if SIM_YES_ID in lp and SIM_NO_ID in lp:
        return lp[SIM_YES_ID], lp[SIM_NO_ID]
    p = 0.9 if answer.text == "yes" else 0.1
    return math.log(p), math.log(1 - p)


def native_answer(answer: Any, parsed: dict[str, Any], latency: float) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "id": hashlib.sha1(f"{time.time_ns()}{id(answer)}".encode()).hexdigest()[:16],
        "finish_reason": {"type": "stop", "matched": None},
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "cached_tokens": answer.cached_tokens,
        "e2e_latency": latency,
    }
    if parsed["logprobs"] and parsed["constraint"].kind == "yesno":
        lp_yes, lp_no = yes_no_logprobs(answer)
        chosen = (lp_yes, SIM_YES_ID, "yes") if lp_yes >= lp_no else (lp_no, SIM_NO_ID, "no")

        def text_or_none(token: str) -> str | None:
            return token if parsed["return_text"] else None

        meta["output_token_logprobs"] = [[chosen[0], chosen[1], text_or_none(chosen[2])]]
        if parsed["top_logprobs_num"]:
            top = sorted([[lp_yes, SIM_YES_ID, text_or_none("yes")], [lp_no, SIM_NO_ID, text_or_none("no")]],
                         key=lambda e: -e[0])
            meta["output_top_logprobs"] = [top[: int(parsed["top_logprobs_num"])]]
        ids = parsed["token_ids_logprob"]
        if ids:
            table = {SIM_YES_ID: lp_yes, SIM_NO_ID: lp_no}
            meta["output_token_ids_logprobs"] = [[[table.get(int(t), -30.0), int(t), None] for t in ids]]
    return {"text": answer.text, "output_ids": [], "meta_info": meta}


def chat_answer(answer: Any, parsed: dict[str, Any], model_name: str) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": answer.text, "reasoning_content": None, "tool_calls": None},
        "logprobs": None,
        "finish_reason": "stop",
    }
    if parsed["logprobs"] and parsed["constraint"].kind == "yesno":
        lp_yes, lp_no = yes_no_logprobs(answer)
        entries = sorted([{"token": "yes", "logprob": lp_yes, "bytes": list(b"yes")},
                          {"token": "no", "logprob": lp_no, "bytes": list(b"no")}], key=lambda e: -e["logprob"])
        top = entries[: parsed["top_logprobs"]] if parsed["top_logprobs"] else []
        choice["logprobs"] = {"content": [{**entries[0], "top_logprobs": top}]}
    return {
        "id": "chatcmpl-" + hashlib.sha1(f"{time.time_ns()}{id(answer)}".encode()).hexdigest()[:16],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [choice],
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": answer.cached_tokens},
        },
    }
