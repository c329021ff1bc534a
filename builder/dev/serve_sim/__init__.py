"""`tagllm serve-sim`: a model server that answers from human labels, for tests, benchmarks and dry runs.

It speaks the subset of both wire protocols the http engine uses:

- SGLang native: `GET /ready`, `GET /health`, `GET /model_info`, `POST /generate`;
- OpenAI-compatible: `GET /v1/models`, `POST /v1/chat/completions` (SGLang's top-level `ebnf` /
  `regex`, `response_format` JSON schema, vLLM's `structured_outputs`);

plus `GET /stats` (JSON counters of requests and injected faults).

Modules: `options` (knobs, counters, constants), `parse` (reading requests and constraints),
`reply` (answer bodies), `oracle` (labels by image hash), `server` (handlers, faults, capacity),
`running` (start it from a recipe, in the foreground or a background thread).

Answers come from `SimulatedModel`: the constraint is recovered from the request exactly as a real
server would receive it (the labels quoted in the EBNF or regex, the `enum` of the JSON schema,
a one-token yes/no when logprobs are asked), the question is the prompt text, and the reference
labels are looked up by the sha256 of the image bytes in an oracle built from a recipe's source.

Load and failure behaviour are configurable: per-request latency, a capacity (requests processed at
once; the rest queue), and seeded fault rates: 5xx, hangs longer than a client timeout, dropped
connections, malformed JSON, empty answers, and answers that violate the constraint. Bad requests
get the same 400s SGLang gives (unknown sampling keys, two constraints, `uniqueItems`).

Every response carries `X-Tagllm-Simulated: 1` and the model info says `simulated: true`, so a
client can tell (and the dataset card can say) that the labels are simulated.
"""

from builder.dev.serve_sim.options import (
    FAULT_KINDS,
    SGLANG_SAMPLING_KEYS,
    SIM_HEADER,
    SIM_NO_ID,
    SIM_YES_ID,
    UNSUPPORTED_SCHEMA_KEYWORDS,
    BadRequest,
    SimOptions,
    SimStats,
)
from builder.dev.serve_sim.oracle import build_oracle, image_key
from builder.dev.serve_sim.parse import (
    check_schema,
    constraint_from_grammar,
    constraint_from_schema,
    decode_data_url,
    options_from_ebnf,
    options_from_regex,
)
from builder.dev.serve_sim.running import make_server, running_sim_server, serve, start_server
from builder.dev.serve_sim.server import SIM_KEY, SimServer

__all__ = [
    "FAULT_KINDS", "SGLANG_SAMPLING_KEYS", "SIM_HEADER", "SIM_KEY", "SIM_NO_ID", "SIM_YES_ID",
    "UNSUPPORTED_SCHEMA_KEYWORDS", "BadRequest", "SimOptions", "SimServer", "SimStats", "build_oracle",
    "check_schema", "constraint_from_grammar", "constraint_from_schema", "decode_data_url", "image_key",
    "make_server", "options_from_ebnf", "options_from_regex", "running_sim_server", "serve", "start_server",
]
