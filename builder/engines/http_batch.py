"""One image's questions of one kind as one batch `/generate` (SGLang's native protocol).

SGLang takes `text` and `sampling_params` as lists, the image once (a single `image_data` applies to every
item) and `token_ids_logprob` as one id list per item; it answers a list, in order. Measured on a real SGLang
0.5.23 server (`tests/benchmarks/bench_sglang_server.py`): the same answers, bit for bit, for about a third
less CPU per image in the server's front process than one call per question. Its per-item work (a shared
memory segment and a pickle of the image features per item) stays: that is what a batch cannot remove.
"""

from __future__ import annotations

from typing import Any

PER_ITEM = ("text", "sampling_params", "token_ids_logprob")  # the fields a batch holds one of per item


def batch_body(bodies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The batch of these native bodies, or None when they cannot share one call: not one image each, the
    same image, and the same other fields (SGLang reads those once for the whole batch)."""
    if len(bodies) < 2 or any("image_data" not in b for b in bodies):
        return None
    first = bodies[0]
    shared = {k: v for k, v in first.items() if k not in PER_ITEM}
    for body in bodies[1:]:
        if body.keys() != first.keys() or any(body[k] != v for k, v in shared.items()):
            return None
    batch = dict(shared)
    for key in PER_ITEM:
        if key in first:
            batch[key] = [b[key] for b in bodies]
    return batch


def batch_answers(payload: Any, count: int) -> list[dict[str, Any]] | None:
    """The per-item answers of a batch call, or None when the payload is not `count` answers."""
    if not isinstance(payload, list) or len(payload) != count or not all(isinstance(a, dict) for a in payload):
        return None
    return payload
