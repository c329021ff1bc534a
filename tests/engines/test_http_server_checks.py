"""What the http engine learns from a server before and while it asks: the model it serves, refusals that
no retry mends, the context length, SGLang's flags, and yes/no scores over SGLang's chat endpoint."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from builder.engines.base import EngineStop, Request
from builder.engines.http import HttpEngine
from builder.engines.http_wire import YES_NO_BIAS, Wire, chat_body, native_logprobs, read_chat
from builder.errors import RunError
from builder.prompts.constraints import Constraint
from builder.prompts.render import chat
from builder.prompts.scoring import YesNoIds, yes_probability

IDS = YesNoIds((463, 565), (472,))


def question(max_tokens: int = 8, image: bytes | None = None) -> Request:
    return Request(chat("system", "Is there a cat?"), image, Constraint("free"), max_tokens=max_tokens)


class Stand:
    """A small OpenAI-compatible stand-in: /v1/models, /tokenize, /server_info and a scripted chat endpoint."""

    def __init__(self, models: list[dict[str, Any]], chat_status: list[int] | None = None, prompt_tokens: int = 10,
                 server_info: dict[str, Any] | None = None):
        self.models, self.chat_status, self.prompt_tokens = models, chat_status or [200], prompt_tokens
        self.server_info, self.bodies = server_info, []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_get("/server_info", self.info)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": self.models})

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        words = {"yes": [463], " yes": [565], " no": [472]}
        tokens = words.get(body["prompt"], [1, 2] if len(body["prompt"]) < 5 else [1] * self.prompt_tokens)
        return web.json_response({"tokens": tokens, "count": len(tokens)})

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.server_info) if self.server_info else web.Response(status=404)

    async def chat(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        status = self.chat_status[min(len(self.bodies), len(self.chat_status)) - 1]
        if status >= 400:
            return web.json_response({"error": {"message": f"refused ({status})"}}, status=status)
        return web.json_response({"choices": [{"message": {"content": "yes"}}], "usage": {"prompt_tokens": 3}})


def ask_app(app: web.Application, requests: list[Request], **kwargs: Any) -> tuple[list, HttpEngine]:
    """Serve `app` on a test server and send `requests` through an http engine pointed at it."""
    async def go() -> tuple[list, HttpEngine]:
        server = TestServer(app)
        await server.start_server()
        engine = HttpEngine(servers=[str(server.make_url("")).rstrip("/")], backoff=0.01, **kwargs)
        try:
            await engine.start()
            return await engine.generate(requests), engine
        finally:
            await engine.close()
            await server.close()

    return asyncio.run(go())


def ask(stand: Stand, requests: list[Request], **kwargs: Any) -> tuple[list, HttpEngine]:
    return ask_app(stand.app(), requests, **kwargs)


def test_a_model_the_server_does_not_serve_is_refused_with_both_names() -> None:
    stand = Stand([{"id": "other-model", "owned_by": "someone"}], chat_status=[404])
    with pytest.raises(RunError) as err:
        ask(stand, [question()] * 12, api="openai", model="my-model")
    assert "'my-model'" in str(err.value) and "other-model" in str(err.value)
    assert stand.bodies == []  # refused before any request


def test_requests_all_refused_from_the_start_stop_the_run() -> None:
    stand = Stand([{"id": "m", "owned_by": "someone"}], chat_status=[401])
    with pytest.raises(EngineStop) as err:
        ask(stand, [question()] * 40, api="openai", model="m", concurrency=1)
    assert len(stand.bodies) == 3  # not 40
    assert "HTTP 401" in str(err.value) and "refused (401)" in str(err.value)


def test_refusals_after_an_accepted_request_fail_only_their_items() -> None:
    stand = Stand([{"id": "m", "owned_by": "someone"}], chat_status=[200, 400])
    results, _ = ask(stand, [question()] * 6, api="openai", model="m", concurrency=1)
    assert [r.ok for r in results] == [True] + [False] * 5
    assert all("HTTP 400" in r.error and not r.transient for r in results[1:])


def test_a_long_answer_budget_is_fitted_to_the_context() -> None:
    stand = Stand([{"id": "m", "owned_by": "vllm", "max_model_len": 2048}], prompt_tokens=265)
    results, engine = ask(stand, [question(4096), question(64)], api="openai", model="m", server_kind="vllm")
    assert all(r.ok for r in results)
    assert sorted(b["max_tokens"] for b in stand.bodies) == [64, 2048 - 265 - 16]
    assert engine.describe()["server_info"]["max_model_len"] == 2048


def test_a_prompt_that_fills_the_context_fails_its_item_only() -> None:
    stand = Stand([{"id": "m", "owned_by": "vllm", "max_model_len": 2048}], prompt_tokens=2040)
    results, _ = ask(stand, [question(4096)], api="openai", model="m", server_kind="vllm")
    assert not results[0].ok and not results[0].transient
    assert "2040 tokens" in results[0].error and "2048" in results[0].error
    assert stand.bodies == []


def test_missing_sglang_flags_are_named(capsys: pytest.CaptureFixture) -> None:
    info = {"enable_cache_report": False, "mm_preprocess_cache_size_mb": None, "version": "0.5.23"}
    stand = Stand([{"id": "m", "owned_by": "sglang", "max_model_len": 4096}], server_info=info)
    _, engine = ask(stand, [question()], api="openai", model="m")
    err = capsys.readouterr().err
    assert "--enable-cache-report" in err and "--mm-preprocess-cache-size-mb 512" in err
    assert engine.describe()["server_info"]["sglang_flags"] == info
    info.update(enable_cache_report=True, mm_preprocess_cache_size_mb=512)
    ask(Stand(stand.models, server_info=info), [question()], api="openai", model="m")
    assert "runs without" not in capsys.readouterr().err


def test_sglang_chat_scores_under_an_equal_bias_are_the_token_id_scores() -> None:
    """SGLang's chat endpoint has no token-id logprobs: the same bias on every yes/no id makes them the top
    tokens and leaves their ratios alone, so P(yes) is what the native endpoint's token ids give."""
    wire = Wire(api="openai", server_kind="sglang", ids=IDS, model="m")
    request = Request(chat("s", "Is there a cat?"), b"img", Constraint("yesno"), max_tokens=1, logprobs=True)
    body = chat_body(wire, request)
    assert body["logit_bias"] == {"463": YES_NO_BIAS, "565": YES_NO_BIAS, "472": YES_NO_BIAS}
    assert body["top_logprobs"] == 3 and body["max_tokens"] == 1 and body["logprobs"] is True
    native = {463: -6.3517, 565: -6.6087, 472: -6.3908}  # as seen from SGLang 0.5.23's /generate
    shift = 5.3456  # the bias moved every one of them up by the same amount, after normalisation
    top = [{"token": t, "logprob": native[i] + shift} for t, i in (("yes", 463), (" no", 472), (" yes", 565))]
    payload = {"choices": [{"message": {"content": "yes"}, "logprobs": {"content": [{"token": "yes", "top_logprobs": top}]}}]}
    result = read_chat(payload, request, wire)
    expected = yes_probability(*native_logprobs({"output_token_ids_logprobs": [[[v, i, None] for i, v in native.items()]]},
                                                IDS)[:2])
    assert result.yes_prob == pytest.approx(expected.p_yes, abs=1e-9)
    assert "score_bound" not in result.extra  # every asked id came back: nothing is bounded
    assert math.isclose(expected.p_yes, (math.exp(-6.3517) + math.exp(-6.6087)) /
                        (math.exp(-6.3517) + math.exp(-6.6087) + math.exp(-6.3908)))
    assert json.dumps(body)  # serialisable as sent


def test_yes_no_ids_from_generate_where_tokenize_is_missing() -> None:
    """Behind sglang-router only `/generate` reaches SGLang: the ids come from the prompt tokens of a request
    that generates nothing; a token every spelling starts with (a BOS) is not part of the word."""
    vocab = {"yes": 463, " yes": 565, " no": 472}
    seen = []

    async def generate(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        assert body["text"] and body["sampling_params"]["max_new_tokens"] == 0  # an empty text crashes SGLang
        ids = [1] + ([vocab[body["text"]]] if body["text"] in vocab else [7, 8])
        return web.json_response({"text": "", "meta_info": {"input_token_logprobs": [[None, i, None] for i in ids]}})

    async def go() -> HttpEngine:
        app = web.Application()
        app.router.add_post("/generate", generate)
        app.router.add_get("/health", _ok)
        server = TestServer(app)
        await server.start_server()
        engine = HttpEngine(servers=[str(server.make_url("")).rstrip("/")], api="http-sglang")
        try:
            await engine.start()
            return engine
        finally:
            await engine.close()
            await server.close()

    engine = asyncio.run(go())
    assert engine.wire.ids == YesNoIds((463, 565), (472,))
    assert len(seen) == 12  # every spelling once


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({})


def native_stand(accept_batches: bool) -> tuple[web.Application, list]:
    """A native stand-in answering each item from its text; batches (lists) only when told to."""
    seen: list[Any] = []

    def answer(text: str, asked: list[int] | None) -> dict[str, Any]:
        meta = {"prompt_tokens": 5, "cached_tokens": 2, "completion_tokens": 1}
        if asked:
            meta["output_token_ids_logprobs"] = [[[-1.0 - (len(text) % 7) / 10, asked[0], None],
                                                  [-1.5, asked[-1], None]]]
        return {"text": f"answer to {len(text)}", "meta_info": meta}

    async def generate(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if isinstance(body["text"], list):
            if not accept_batches:
                return web.json_response({"error": {"message": "no batches here"}}, status=400)
            assert isinstance(body["image_data"], str)  # the image once for the whole batch
            ids = body.get("token_ids_logprob") or [None] * len(body["text"])
            return web.json_response([answer(t, i) for t, i in zip(body["text"], ids)])
        return web.json_response(answer(body["text"], body.get("token_ids_logprob")))

    app = web.Application()
    app.router.add_post("/generate", generate)
    app.router.add_get("/health", _ok)
    return app, seen


def ask_native(accept_batches: bool, requests: list[Request], **kwargs: Any) -> tuple[list, list]:
    app, seen = native_stand(accept_batches)
    results, _ = ask_app(app, requests, api="http-sglang", yes_token_ids=[5], no_token_ids=[7], **kwargs)
    return results, seen


def one_image_questions() -> list[Request]:
    image = b"\xff\xd8 an image"
    stage1 = [Request(chat("s", f"Which {g} objects?"), image, Constraint("subset", ("a", "b")), max_tokens=16)
              for g in ("animal", "vehicle", "food")]
    stage2 = [Request(chat("s", f"Is there a {x}?"), image, Constraint("yesno"), max_tokens=1, logprobs=True)
              for x in ("cat", "dog")]
    return stage1 + stage2


def test_one_images_questions_of_one_kind_go_as_one_batch_with_the_same_answers() -> None:
    questions = one_image_questions()
    one_by_one, seen_single = ask_native(False, questions[:3], batch=False)
    stage1, seen = ask_native(True, questions[:3])
    stage2, seen2 = ask_native(True, questions[3:])
    assert len(seen) == 1 and len(seen[0]["text"]) == 3 and len(seen2) == 1 and len(seen_single) == 3
    assert [r.text for r in stage1] == [r.text for r in one_by_one]
    assert seen2[0]["token_ids_logprob"] == [[5, 7], [5, 7]] and seen2[0]["return_logprob"] is True
    singles, _ = ask_native(False, questions[3:], batch=False)
    assert [r.yes_prob for r in stage2] == [r.yes_prob for r in singles] and stage2[0].yes_prob is not None


def test_a_refused_batch_goes_request_by_request_and_batching_stops() -> None:
    """sglang-router 0.3.2 refuses a batch (422): the questions go one by one, the run goes on, no more batches."""
    questions = one_image_questions()

    async def go() -> tuple[list, list]:
        app, seen = native_stand(False)
        server = TestServer(app)
        await server.start_server()
        engine = HttpEngine(servers=[str(server.make_url("")).rstrip("/")], api="http-sglang",
                            yes_token_ids=[5], no_token_ids=[7], backoff=0.01)
        try:
            await engine.start()
            return [await engine.generate(questions[:3]) for _ in range(4)], seen
        finally:
            await engine.close()
            await server.close()

    rounds, seen = asyncio.run(go())
    assert all(r.ok for results in rounds for r in results)
    assert [isinstance(b["text"], list) for b in seen] == [True] + [False] * 12  # one refused batch, then singles


def test_questions_that_cannot_share_a_call_are_not_batched() -> None:
    from builder.engines.http_batch import batch_body

    a, b = {"text": "x", "image_data": "u1", "sampling_params": {}}, {"text": "y", "image_data": "u2", "sampling_params": {}}
    assert batch_body([a, b]) is None  # two images
    assert batch_body([a, {**a, "return_logprob": True}]) is None  # other fields
    assert batch_body([a]) is None and batch_body([{"text": "x"}, {"text": "y"}]) is None  # one item; no image
    assert batch_body([a, {**a, "text": "z"}]) == {"image_data": "u1", "text": ["x", "z"], "sampling_params": [{}, {}]}
