"""Stand-ins for sglang's offline engine and a model processor, recording what they are given."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

YES_IDS = [5, 6]
NO_IDS = [7, 8]


class FakeTokenizer:
    """'yes'/'Yes' and 'no'/'No' are single tokens; everything else takes two."""

    VOCAB = {"yes": 5, "Yes": 6, "no": 7, "No": 8}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.VOCAB[text]] if text in self.VOCAB else [1, 2]

    def decode(self, ids: list[int], **kwargs: Any) -> str:
        names = {v: k for k, v in self.VOCAB.items()}
        return "".join(names.get(i, "?") for i in ids)


class FakeProcessor:
    """Renders chat messages like a Qwen processor: ChatML with its image placeholder."""

    tokenizer = FakeTokenizer()

    def apply_chat_template(self, messages: list[dict[str, Any]], tokenize: bool = False,
                            add_generation_prompt: bool = True, **kwargs: Any) -> str:
        assert tokenize is False and add_generation_prompt is True
        out = []
        for m in messages:
            content = m["content"]
            if not isinstance(content, str):
                content = "".join("<|vision_start|><|image_pad|><|vision_end|>" if p["type"] == "image"
                                  else p["text"] for p in content)
            out.append(f"<|im_start|>{m['role']}\n{content}<|im_end|>\n")
        return "".join(out) + "<|im_start|>assistant\n"


class RecordingEngine:
    """Same method signatures as `sglang.Engine.async_generate` / `shutdown` (checked against the
    wheel by the contract tests); records every call and answers like SGLang does."""

    def __init__(self, **server_args: Any):
        self.server_args = server_args
        self.calls: list[dict[str, Any]] = []
        self.shutdowns = 0
        self.fail_when: Any = None  # prompt substring -> raise ValueError (a 4xx abort)
        self.fail_with: list[Exception] = []  # raised one per call, first to last (then answers again)
        self.yes_logprob = -0.2
        self.no_logprob = -1.8

    async def async_generate(
        self,
        prompt: str | list[str] | None = None,
        sampling_params: dict | list[dict] | None = None,
        input_ids: list[int] | None = None,
        image_data: Any = None,
        return_logprob: bool | list[bool] | None = False,
        logprob_start_len: int | list[int] | None = None,
        top_logprobs_num: int | list[int] | None = None,
        token_ids_logprob: list[int] | list[list[int]] | None = None,
        lora_path: Any = None,
        custom_logit_processor: Any = None,
        return_hidden_states: Any = False,
        stream: bool = False,
        rid: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        self.calls.append(dict(prompt=prompt, sampling_params=sampling_params, image_data=image_data,
                               return_logprob=return_logprob, top_logprobs_num=top_logprobs_num,
                               token_ids_logprob=token_ids_logprob, extra=kwargs))
        await asyncio.sleep(0)
        if self.fail_with:
            raise self.fail_with.pop(0)
        if self.fail_when and self.fail_when in (prompt or ""):
            raise ValueError("Image could not be loaded (simulated 4xx abort)")
        params = sampling_params or {}
        meta: dict[str, Any] = {"prompt_tokens": 321, "completion_tokens": 7, "cached_tokens": 256,
                                "e2e_latency": 0.01, "finish_reason": {"type": "stop"}}
        text = '{"labels":[]}' if params.get("ebnf") else "text"
        if return_logprob:
            text = "yes" if self.yes_logprob >= self.no_logprob else "no"
            meta["completion_tokens"] = 1
            table = {5: self.yes_logprob, 6: self.yes_logprob - 3, 7: self.no_logprob, 8: self.no_logprob - 3}
            if token_ids_logprob:
                meta["output_token_ids_logprobs"] = [[[table.get(t, -20.0), t, None] for t in token_ids_logprob]]
            if top_logprobs_num:
                top = sorted(([lp, t, None] for t, lp in table.items()), key=lambda e: -e[0])
                meta["output_top_logprobs"] = [top[:top_logprobs_num]]
        return {"text": text, "meta_info": meta}

    def shutdown(self) -> None:
        self.shutdowns += 1


def skip_or_fail(why: str) -> None:
    """Without PyPI the contract tests skip loudly; under CI=true they must run, so they fail instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: the sglang contract tests must run, but {why}")
    pytest.skip(why)
