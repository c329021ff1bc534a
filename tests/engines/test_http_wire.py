"""What the http engine learns from a server (kind, yes/no ids) and how it reads scores back."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from builder.engines.base import Request
from builder.engines.http_servers import detect_kind, tokenize_yes_no
from builder.engines.http_wire import Wire, chat_body, read_chat, read_native
from builder.prompts.constraints import Constraint
from builder.prompts.render import chat
from builder.prompts.scoring import YesNoIds

YESNO = Request(chat("sys", "Is there a cat?"), b"img", Constraint("yesno"), max_tokens=1, logprobs=True)
SUBSET = Request(chat("sys", "Which?"), b"img", Constraint("subset", ("a", "b")))
IDS = YesNoIds((499,), (508,))


def fake_server(routes: dict[tuple[str, str], Any]):
    """A fetch answering (method, path) from `routes` (a callable gets the body); 404 otherwise."""
    async def fetch(method: str, url: str, body: Any = None) -> tuple[int, str, dict]:
        path = "/" + url.split("/", 3)[3]
        answer = routes.get((method, path))
        if answer is None:
            return 404, "{}", {}
        return 200, json.dumps(answer(body) if callable(answer) else answer), {}
    return fetch


@pytest.mark.parametrize("routes,kind", [
    ({("GET", "/v1/models"): {"data": [{"id": "m", "owned_by": "vllm"}]}}, "vllm"),
    ({("GET", "/v1/models"): {"data": [{"id": "m", "owned_by": "sglang"}]}}, "sglang"),
    ({("GET", "/v1/models"): {"data": [{"id": "m", "owned_by": "tagllm-serve-sim"}]}}, "openai"),
    ({("GET", "/model_info"): {"model_path": "m"}}, "sglang"),
    ({("GET", "/version"): {"version": "0.32.0"}}, "vllm"),
    ({}, "openai"),
])
def test_server_kind_is_detected_from_the_server(routes: dict, kind: str) -> None:
    assert asyncio.run(detect_kind(fake_server(routes), "http://h:1")) == kind


def test_yes_no_ids_come_from_the_servers_tokenize() -> None:
    vocab = {"yes": [499], "Yes": [12, 13], " yes": [877], "no": [508], " No": [902]}
    fetch = fake_server({("POST", "/tokenize"): lambda body: {"tokens": vocab.get(body["prompt"], [1, 2])}})
    assert asyncio.run(tokenize_yes_no(fetch, "http://h:1", "m")) == YesNoIds((499, 877), (508, 902))
    assert not asyncio.run(tokenize_yes_no(fake_server({}), "http://h:1", "m"))  # no /tokenize: no ids


def test_vllm_body_asks_for_exactly_the_yes_no_ids_and_reads_them_back() -> None:
    wire = Wire(api="vllm", server_kind="vllm", model="m", ids=IDS)
    body = chat_body(wire, YESNO)
    assert body["logprob_token_ids"] == [499, 508] and body["return_tokens_as_token_ids"] is True
    assert (body["top_p"], body["top_k"], body["repetition_penalty"]) == (1.0, -1, 1.0)
    assert "seed" not in body
    first = {"token": "token_id:17", "logprob": -0.1, "top_logprobs": [
        {"token": "token_id:17", "logprob": -0.1}, {"token": "token_id:499", "logprob": math.log(0.03)},
        {"token": "token_id:508", "logprob": math.log(0.01)}]}
    payload = {"choices": [{"message": {"content": "of"}, "logprobs": {"content": [first]}}],
               "usage": {"prompt_tokens": 90, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 64}}}
    result = read_chat(payload, YESNO, wire)
    assert result.yes_prob == pytest.approx(0.75) and result.cached_tokens == 64
    assert "score_bound" not in result.extra


def test_generic_openai_reads_top_logprobs_by_word_with_a_stated_bound() -> None:
    wire = Wire(api="openai", server_kind="openai", model="m", top_logprobs=3)
    body = chat_body(wire, YESNO)
    assert body["top_logprobs"] == 3 and "top_k" not in body and "logprob_token_ids" not in body
    top = [{"token": "Yes", "logprob": math.log(0.6)}, {"token": "maybe", "logprob": math.log(0.2)},
           {"token": "sure", "logprob": math.log(0.1)}]
    payload = {"choices": [{"message": {"content": "Yes"}, "logprobs": {"content": [{"top_logprobs": top}]}}]}
    result = read_chat(payload, YESNO, wire)
    assert result.yes_prob == pytest.approx(0.6 / 0.7) and result.extra["score_bound"]
    none = {"choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"top_logprobs": top[1:]}]}}]}
    assert read_chat(none, YESNO, wire).yes_prob is None  # neither side seen: no score, not a guess


def test_native_answers_are_read_by_token_id() -> None:
    meta = {"prompt_tokens": 5, "output_token_ids_logprobs": [[[math.log(0.2), 499, "yes"],
                                                              [math.log(0.6), 508, "no"]]]}
    assert read_native({"text": "no", "meta_info": meta}, YESNO, IDS).yes_prob == pytest.approx(0.25)


def test_sglang_openai_body_has_its_grammar_and_sampling_fields() -> None:
    wire = Wire(api="openai", server_kind="sglang", model="m", ids=IDS)
    body = chat_body(wire, SUBSET)
    assert body["ebnf"].startswith("root ::=") and body["top_k"] == -1 and body["repetition_penalty"] == 1.0
    assert "token_ids_logprob" not in chat_body(wire, YESNO)  # its chat endpoint has no such field


def test_bodies_are_made_once_per_question_and_equal_json_dumps_byte_for_byte() -> None:
    """`BodyBytes` gives exactly `json.dumps(body)` for both protocols, for a new image of a known question, for a
    request without an image, and again after a wire setting learned at start changes."""
    import json as _json

    from builder.engines.base import Request
    from builder.engines.http_wire import BodyBytes, Wire, chat_body, native_body
    from builder.prompts.constraints import Constraint
    from builder.prompts.render import chat

    image, other = bytes(range(256)) * 300, bytes(range(255, -1, -1)) * 200
    request = Request(messages=chat("sys \u00e9", "Is there a \"cat\"?"), image=image, constraint=Constraint("yesno"),
                      max_tokens=1, logprobs=True)
    plain = Request(messages=chat("s", "q"), image=None, constraint=Constraint("free"))
    for make in (chat_body, native_body):
        wire = Wire(server_kind="vllm", api="http-sglang" if make is native_body else "openai")
        cached = BodyBytes(lambda r, make=make, wire=wire: make(wire, r))
        for req in (request, request.about(other), request.about(other), plain, request.about(None)):
            assert cached.encode(wire, req) == _json.dumps(make(wire, req)).encode()
        wire.server_kind = "sglang"  # settings learned at start change the bodies: not served from the memo
        assert cached.encode(wire, request) == _json.dumps(make(wire, request)).encode()
