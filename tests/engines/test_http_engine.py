"""The http engine against `serve-sim`, in every API mode: answers, scores, retries, errors, keys, load."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest

from builder.dev.serve_sim import SIM_NO_ID, SIM_YES_ID, image_key, running_sim_server
from builder.engines.base import Request
from builder.engines.http import HttpEngine, render_chat
from builder.engines.http_servers import v1
from builder.engines.simulated import NoiseModel
from builder.errors import RunError
from builder.prompts.constraints import Constraint, parse_subset, parse_yesno
from builder.prompts.render import chat
from builder.recipe.vocab import vocabulary_from_data

VOCAB = vocabulary_from_data({"groups": [
    {"name": "animal", "labels": [{"name": "cat"}, {"name": "dog"}, {"name": "bird"}]},
    {"name": "vehicle", "labels": [{"name": "car"}, {"name": "bus"}, {"name": "dining table"}]},
]}, "test")
GROUPS = {"animal": ("cat", "dog", "bird"), "vehicle": ("car", "bus", "dining table")}
# every error rate of the noise model at zero: answers are exactly the human labels
EXACT = NoiseModel(**{name: 0.0 for name in NoiseModel.__dataclass_fields__ if name.endswith("_rate")})
APIS = [("http-sglang", None), ("openai", None), ("openai", "sglang"), ("vllm", None)]


@pytest.fixture(scope="module")
def truth(photos: dict[str, bytes]) -> dict[str, list[str]]:
    return {"astronaut": [], "chelsea": ["cat"], "coffee": ["dining table"], "rocket": ["bus", "bird"]}


@pytest.fixture(scope="module")
def oracle(photos: dict[str, bytes], truth: dict[str, list[str]]) -> dict[str, list[str]]:
    return {image_key(photos[name]): labels for name, labels in truth.items()}


def stage1(image: bytes, group: str) -> Request:
    options = GROUPS[group]
    question = f"Which of the following {group} objects are visible? Options: {', '.join(options)}."
    return Request(chat("You are a careful image annotator.", question), image,
                   Constraint("subset", options), max_tokens=64, tag=f"stage1:{group}")


def stage2(image: bytes, label: str) -> Request:
    return Request(chat("You are a careful image annotator.", f"Is there a {label} in this image? Answer yes or no."),
                   image, Constraint("yesno"), max_tokens=1, logprobs=True, tag=f"stage2:{label}")


def engine_for(url: str | list[str], api: str, server_kind: str | None = None, **kwargs: Any) -> HttpEngine:
    kwargs.setdefault("timeout", 10.0)
    kwargs.setdefault("retries", 3)
    kwargs.setdefault("backoff", 0.01)
    return HttpEngine(servers=[url] if isinstance(url, str) else url, api=api, server_kind=server_kind,
                      model="tagllm-sim", **kwargs)


async def _run(engine: HttpEngine, requests: list[Request]) -> list[Any]:
    async with engine:
        return await engine.generate(requests)


def run(engine: HttpEngine, requests: list[Request]) -> list[Any]:
    return asyncio.run(_run(engine, requests))


def stats(url: str) -> dict[str, Any]:
    return httpx.get(url + "/stats").json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("api,server_kind", APIS)
def test_labels_and_scores_in_every_api_mode(api: str, server_kind: str | None, photos: dict[str, bytes],
                                             oracle: dict, truth: dict) -> None:
    requests, expected = [], []
    for name, image in photos.items():
        for group in GROUPS:
            requests.append(stage1(image, group))
            expected.append([o for o in GROUPS[group] if o in truth[name]])
        for label in ("cat", "bus"):
            requests.append(stage2(image, label))
            expected.append(label in truth[name])
    with running_sim_server(vocab=VOCAB, oracle=oracle, noise=EXACT) as url:
        engine = engine_for(url, api, server_kind)
        results = run(engine, requests)
        served = stats(url)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    for request, result, want in zip(requests, results, expected, strict=True):
        assert result.prompt_tokens > 0 and result.completion_tokens > 0
        if request.constraint.kind == "subset":
            assert parse_subset(result.text, request.constraint.options) == want
        else:
            assert parse_yesno(result.text) is want, request.tag
            assert 0.0 <= result.yes_prob <= 1.0 and (result.yes_prob >= 0.5) is want
    assert served["oracle_hits"] == len(requests) and served["bad_requests"] == 0
    assert sum(r.cached_tokens for r in results) > 0  # repeated images hit the (simulated) prefix cache
    assert engine.describe()["simulated"] is True  # serve-sim says so, and the engine passes it on


def test_token_ids_logprob_and_top_logprobs_give_the_same_score(photos: dict[str, bytes], oracle: dict) -> None:
    requests = [stage2(photos["chelsea"], "cat"), stage2(photos["rocket"], "cat")]
    with running_sim_server(vocab=VOCAB, oracle=oracle) as url:
        by_top = run(engine_for(url, "http-sglang"), requests)
        by_ids = run(engine_for(url, "http-sglang", yes_token_ids=[SIM_YES_ID], no_token_ids=[SIM_NO_ID]), requests)
    for a, b in zip(by_top, by_ids, strict=True):
        assert a.yes_prob == pytest.approx(b.yes_prob)


@pytest.mark.parametrize("api", ["http-sglang", "openai"])
def test_transient_faults_are_retried_until_every_answer_arrives(api: str, photos: dict[str, bytes],
                                                                 oracle: dict) -> None:
    requests = [stage1(image, group) for image in photos.values() for group in GROUPS] * 3
    requests += [stage2(image, "cat") for image in photos.values()]
    faults = dict(fault_5xx=0.2, fault_drop=0.1, fault_malformed=0.1, fault_timeout=0.05, hang_seconds=3.0, seed=3)
    with running_sim_server(vocab=VOCAB, oracle=oracle, **faults) as url:
        engine = engine_for(url, api, timeout=0.5, retries=10, concurrency=8)
        results = run(engine, requests)
        served = stats(url)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert max(r.attempts for r in results) > 1
    assert {"5xx", "drop", "malformed", "timeout"} <= set(served["faults"])
    assert served["generation_requests"] == sum(r.attempts for r in results) == engine.calls
    for request, result in zip(requests, results, strict=True):
        if request.constraint.kind == "subset":
            parse_subset(result.text, request.constraint.options)


def test_empty_and_violating_answers_come_back_as_text(photos: dict[str, bytes], oracle: dict) -> None:
    """They are not transport failures: the tagger's parser catches them (and re-asks)."""
    requests = [stage1(photos["chelsea"], "animal")] * 30
    with running_sim_server(vocab=VOCAB, oracle=oracle, fault_empty=0.3, fault_violate=0.3, seed=1) as url:
        results = run(engine_for(url, "openai", server_kind="sglang"), requests)
        served = stats(url)
    assert all(r.ok and r.attempts == 1 for r in results)
    assert served["faults"]["empty"] > 0 and served["faults"]["violate"] > 0
    bad = 0
    for result in results:
        try:
            parse_subset(result.text, GROUPS["animal"])
        except ValueError:
            bad += 1
    # a repeated label is broken too: the parser refuses it, so the tagger re-asks
    assert bad == served["faults"]["empty"] + served["faults"]["violate"]


@pytest.mark.parametrize("api,server_kind", [("http-sglang", None), ("openai", None)])
def test_client_errors_are_not_retried(api: str, server_kind: str | None, photos: dict[str, bytes]) -> None:
    schema = json.dumps({"type": "object", "properties": {"labels": {
        "type": "array", "items": {"type": "string", "enum": ["cat", "dog"]}, "uniqueItems": True}}})
    bad = Request(chat("", "Which animals?"), photos["chelsea"], Constraint("json_schema", schema=schema))
    good = stage1(photos["chelsea"], "animal")
    with running_sim_server(vocab=VOCAB) as url:
        results = run(engine_for(url, api, server_kind, retries=5), [bad, good])
        served = stats(url)
    assert not results[0].ok and not results[0].transient and results[0].attempts == 1
    assert "HTTP 400" in results[0].error and "uniqueItems" in results[0].error
    assert results[1].ok
    assert served["bad_requests"] == 1


def test_readiness_error_names_the_servers() -> None:
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    for api in ("http-sglang", "openai"):
        engine = engine_for(dead, api, ready_timeout=1.0)
        with pytest.raises(RunError, match=r"^no server answered at http://127\.0\.0\.1:\d+, http://127"):
            asyncio.run(engine.start())
    with pytest.raises(RunError, match="no server given"):
        asyncio.run(HttpEngine(servers=[]).start())


def test_one_dead_server_among_live_ones_is_avoided(photos: dict[str, bytes]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with running_sim_server(vocab=VOCAB) as url:
        engine = engine_for([dead, url], "openai", retries=3)
        results = run(engine, [stage1(photos["coffee"], "vehicle")] * 6)
    assert all(r.ok for r in results)
    assert engine.describe()["requests_per_server"][dead] == 0


def test_api_key_is_sent_and_never_described(monkeypatch: pytest.MonkeyPatch, photos: dict[str, bytes]) -> None:
    secret = "sk-test-7f3a9c"
    monkeypatch.setenv("TAGLLM_TEST_KEY", secret)
    with running_sim_server(vocab=VOCAB, api_key=secret) as url:
        for api in ("http-sglang", "openai"):
            engine = engine_for(url, api, api_key_env="TAGLLM_TEST_KEY")
            results = run(engine, [stage1(photos["chelsea"], "animal"), stage2(photos["chelsea"], "cat")])
            assert all(r.ok for r in results)
            described = json.dumps(engine.describe())
            assert secret not in described and "TAGLLM_TEST_KEY" in described
        # without the key the server refuses, and start() says why
        with pytest.raises(RunError, match="HTTP 401 .*API key"):
            asyncio.run(engine_for(url, "openai").start())
        assert stats(url)["unauthorized"] >= 1
    monkeypatch.delenv("TAGLLM_TEST_KEY")
    with pytest.raises(RunError, match="TAGLLM_TEST_KEY .* is not set"):
        asyncio.run(engine_for(url, "openai", api_key_env="TAGLLM_TEST_KEY").start())


def test_one_image_stays_on_one_server_and_images_spread(photos: dict[str, bytes]) -> None:
    """Image-affine routing: every request about an image goes to that image's server (its prefix
    cache holds the image); different images spread over the servers."""
    images = [data + bytes([i]) for i, data in enumerate(list(photos.values()) * 4)]  # 16 distinct images
    requests = [stage1(image, group) for image in images for group in GROUPS]
    with running_sim_server(vocab=VOCAB, latency=0.02) as one, running_sim_server(vocab=VOCAB, latency=0.02) as two:
        engine = engine_for([one, two], "http-sglang", concurrency=64)
        homes = {image: engine._pick(image) for image in images}
        results = run(engine, requests)
        counts = {one: stats(one)["generation_requests"], two: stats(two)["generation_requests"]}
    assert all(r.ok for r in results)
    expected = {s: sum(len(GROUPS) for image in images if homes[image] == s) for s in (one, two)}
    assert counts == expected, (counts, expected)
    assert min(counts.values()) > 0


def test_a_down_or_saturated_home_server_falls_back() -> None:
    engine = HttpEngine(servers=["http://a:1", "http://b:2"], api="openai", concurrency=4)
    image = b"some image"
    home = engine._pick(image)
    other = next(s for s in engine.servers if s != home)
    engine._in_flight[home] = 4  # twice its fair share: saturated
    assert engine._pick(image) == other
    engine._in_flight[home] = 0
    engine._down_until[home] = float("inf")
    assert engine._pick(image) == other


def test_capacity_queues_the_rest(photos: dict[str, bytes]) -> None:
    requests = [stage1(photos["rocket"], "vehicle")] * 12
    with running_sim_server(vocab=VOCAB, capacity=2, latency=0.05) as url:
        results = run(engine_for(url, "openai", concurrency=12), requests)
        served = stats(url)
    assert all(r.ok for r in results)
    assert served["max_in_flight"] == 2 and served["max_queued"] >= 5


def test_concurrency_bounds_requests_in_flight(photos: dict[str, bytes]) -> None:
    requests = [stage1(photos["rocket"], "vehicle")] * 12
    with running_sim_server(vocab=VOCAB, latency=0.05) as url:
        results = run(engine_for(url, "openai", concurrency=3), requests)
        served = stats(url)
    assert all(r.ok for r in results)
    assert served["max_in_flight"] <= 3


def test_generic_template_and_custom_template() -> None:
    msgs = chat("sys", "Is there a cat?")
    text = render_chat(msgs)
    assert text == ("<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Is there a cat?<|im_end|>\n<|im_start|>assistant\n")
    custom = "{% for m in messages %}{{ m.role }}: {% if m.content is string %}{{ m.content }}{% else %}" \
             "{% for p in m.content %}{% if p.type == 'image' %}{{ image_token }}{% else %}{{ p.text }}" \
             "{% endif %}{% endfor %}{% endif %}\n{% endfor %}ASSISTANT:"
    assert render_chat(msgs, custom, "<image>") == "system: sys\nuser: <image>Is there a cat?\nASSISTANT:"
    assert "<image>" not in render_chat(msgs, custom, "<image>", has_image=False)


def test_hosted_base_url_ending_in_v1_gets_no_second_v1() -> None:
    engine = HttpEngine(servers=["https://api.example.com/v1/"], api="openai")
    assert v1(engine.servers[0], "/chat/completions") == "/chat/completions"
    assert v1("http://h:8000", "/models") == "/v1/models"


def test_credentials_in_urls_are_redacted() -> None:
    engine = HttpEngine(servers=["http://user:pw@host:8000"], api="openai")
    assert engine.describe()["servers"] == ["http://host:8000"]


def test_serve_sim_from_a_recipe(write_recipe: Any, photo_folder: Any) -> None:
    """The oracle is built from the recipe's source, keyed by the image bytes a build sends."""
    import io

    from PIL import Image

    from builder.images import prepare_image
    from builder.recipe.model import load_recipe

    path = write_recipe()
    loaded = load_recipe(path)
    items = [json.loads(line) for line in (photo_folder / "metadata.jsonl").read_text().splitlines()]
    item = next(i for i in items if i["labels"])
    raw = (photo_folder / item["file_name"]).read_bytes()
    prepared = prepare_image(raw, loaded.recipe.engine.max_pixels, loaded.recipe.output.max_image_pixels).data
    group = loaded.vocab.group_of(item["labels"][0])
    options = tuple(label.name for g in loaded.vocab.groups if g.name == group for label in g.labels)
    request = Request(chat("", f"Which {group} objects? Options: {', '.join(options)}"), prepared,
                      Constraint("subset", options))
    assert Image.open(io.BytesIO(prepared)).format == "JPEG"
    with running_sim_server(recipe=path) as url:
        served = stats(url)
        assert served["oracle_size"] == len(items)
        result = run(engine_for(url, "http-sglang"), [request])[0]
        assert stats(url)["oracle_hits"] == 1
    assert result.ok
    parse_subset(result.text, options)


def test_start_waits_for_a_server_still_loading() -> None:
    import threading

    port = free_port()
    stop = threading.Event()

    def late_server() -> None:
        stop.wait(0.8)  # the "model" takes a while to load
        with running_sim_server(vocab=VOCAB, port=port):
            stop.wait(10)

    thread = threading.Thread(target=late_server, daemon=True)
    began = time.monotonic()
    thread.start()
    try:
        engine = engine_for(f"http://127.0.0.1:{port}", "http-sglang", ready_wait=8.0, ready_timeout=0.5)

        async def go() -> tuple[float, dict[str, Any]]:
            async with engine:
                return time.monotonic() - began, dict(engine.server_info)

        waited, info = asyncio.run(go())
    finally:
        stop.set()
        thread.join(5)
    assert 0.8 <= waited < 8.0  # it kept polling while nothing listened, and stopped once the server was up
    assert info["model_path"] and engine.simulated  # and read the model info of the server it waited for


def test_openai_mode_uses_the_served_model_name_when_none_is_given(photos: dict[str, bytes]) -> None:
    with running_sim_server(vocab=VOCAB, model_name="Qwen/Qwen2.5-VL-7B-Instruct") as url:
        engine = HttpEngine(servers=[url], api="vllm")

        async def go() -> dict[str, Any]:
            async with engine:
                return engine.chat_body(stage1(photos["chelsea"], "animal"))

        body = asyncio.run(go())
    assert body["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert engine.describe()["model"] == ""  # the configured name (part of cache keys) is unchanged
