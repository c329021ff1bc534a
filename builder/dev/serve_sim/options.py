"""serve-sim's knobs and counters, and the constants both wire protocols share."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from builder.engines.simulated import NO_ID, YES_ID

SIM_HEADER = "X-Tagllm-Simulated"
OWNER = "tagllm-serve-sim"

# The sampling-param keys SGLang 0.5.23's /generate contract accepts (sglang/api/v1 SamplingParams);
# anything else is a 400, as on the real server. The contract tests check this list against the wheel.
SGLANG_SAMPLING_KEYS = frozenset({
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k", "min_p",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n", "json_schema",
    "regex", "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens",
    "no_stop_trim", "stream_interval", "logit_bias", "sampling_seed", "custom_params", "beam_width",
    "watermark",
})
# JSON-schema keywords SGLang's xgrammar backend refuses (it would silently ignore them).
UNSUPPORTED_SCHEMA_KEYWORDS = frozenset({
    "contains", "dependentRequired", "dependentSchemas", "else", "if", "maxContains", "minContains",
    "multipleOf", "not", "then", "uniqueItems",
})
FAULT_KINDS = ("5xx", "timeout", "drop", "malformed", "empty", "violate")


@dataclass
class SimOptions:
    """How the simulated server behaves. Rates are probabilities per generation request."""

    latency: float = 0.0  # seconds each request is "processed"
    capacity: int = 0  # requests processed at once (0 = no limit); the rest wait in a queue
    fault_5xx: float = 0.0
    fault_timeout: float = 0.0  # hang `hang_seconds` before answering (longer than a client timeout)
    fault_drop: float = 0.0  # close the connection without an answer
    fault_malformed: float = 0.0  # invalid JSON body
    fault_empty: float = 0.0  # empty answer text
    fault_violate: float = 0.0  # an answer outside the constraint
    hang_seconds: float = 30.0
    seed: int = 0  # seeds fault injection (the noise model has its own seed)
    model_name: str = "tagllm-sim"
    api_key: str | None = None  # when set, requests need `Authorization: Bearer <api_key>`
    # Images a real server's prefix cache would still hold (most recently used); a request whose
    # image is among them counts as an image prefix hit in /stats (0 = count no hits).
    prefix_cache_images: int = 256

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            rate = getattr(self, f"fault_{kind}")
            if not 0 <= rate <= 1:
                raise ValueError(f"fault_{kind} must be in [0, 1], got {rate}")
        if sum(getattr(self, f"fault_{k}") for k in FAULT_KINDS) > 1:
            raise ValueError("fault rates add up to more than 1")


@dataclass
class SimStats:
    requests: Counter = field(default_factory=Counter)  # by endpoint
    faults: Counter = field(default_factory=Counter)  # by fault kind
    bad_requests: int = 0
    unauthorized: int = 0
    answered: int = 0
    oracle_hits: int = 0
    oracle_misses: int = 0
    image_prefix_hits: int = 0  # requests whose image this server saw recently (see prefix_cache_images)
    image_prefix_misses: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    queued: int = 0
    max_queued: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["requests"] = dict(self.requests)
        data["faults"] = dict(self.faults)
        data["generation_requests"] = sum(v for k, v in self.requests.items() if k in ("generate", "chat"))
        return data


class BadRequest(Exception):
    """A request SGLang would refuse with 400."""


# Token ids the simulated tokenizer gives "yes" and "no" (pass them as engine.args yes_token_ids /
# no_token_ids to exercise SGLang's token_ids_logprob path).
SIM_YES_ID, SIM_NO_ID = YES_ID, NO_ID
