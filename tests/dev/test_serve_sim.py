"""serve-sim on the wire: constraint recovery, SGLang-like 400s, faults, counters."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from builder.dev.serve_sim import (
    SIM_HEADER,
    SIM_KEY,
    SimOptions,
    constraint_from_grammar,
    constraint_from_schema,
    options_from_ebnf,
    running_sim_server,
    start_server,
)
from builder.prompts.constraints import subset_ebnf, subset_json_schema
from builder.recipe.vocab import vocabulary_from_data

ODD = ("cat", "dining table", 'say "cheese"', "back\\slash", "ñandú", "a|b (c)?")
VOCAB = vocabulary_from_data({"groups": [{"name": "g", "labels": [{"name": n} for n in ODD]}]}, "test")


@pytest.mark.parametrize("options", [ODD, ODD[:1], ODD[2:4]])
def test_options_come_back_from_every_constraint_form(options: tuple[str, ...]) -> None:
    assert options_from_ebnf(subset_ebnf(options)) == options
    assert constraint_from_grammar(None, subset_regex(options), list(VOCAB.names)).options == options
    assert constraint_from_schema(json.dumps(subset_json_schema(options))).options == options


def subset_regex(options: tuple[str, ...] | list[str]) -> str:
    """The ordered-subset language as a regex (what a regex-only client sends): nested optional
    groups keep the order, each label once."""
    tail = ""
    for label in reversed(options):
        item = re.escape(json.dumps(label, ensure_ascii=False))
        if tail:
            tail = f"(?:{item}(?:,{tail})?|{tail})"
        else:
            tail = f"(?:{item})"
    body = f"(?:{tail})?" if tail else ""
    return re.escape('{"labels":[') + body + re.escape("]}")


def test_yes_no_grammars_are_recognized() -> None:
    assert constraint_from_grammar('root ::= "yes" | "no"\n', None, []).kind == "yesno"
    assert constraint_from_grammar(None, "(yes|no)", []).kind == "yesno"
    assert constraint_from_schema('{"type": "object", "properties": {"x": {"type": "string"}}}').kind == "json_schema"


def test_fault_rates_are_checked() -> None:
    with pytest.raises(ValueError, match="fault_5xx"):
        SimOptions(fault_5xx=1.5)
    with pytest.raises(ValueError, match="more than 1"):
        SimOptions(fault_5xx=0.6, fault_drop=0.6)


def _generate(url: str, **params: object) -> httpx.Response:
    body = {"text": "<|im_start|>user\nWhich?<|im_end|>\n", "sampling_params": {"max_new_tokens": 8, **params}}
    return httpx.post(url + "/generate", json=body)


def test_bad_requests_get_sglang_400s() -> None:
    with running_sim_server(vocab=VOCAB) as url:
        r = _generate(url, max_tokens=5)
        assert r.status_code == 400 and "unknown field `max_tokens`" in r.json()["error"]["message"]
        r = _generate(url, ebnf=subset_ebnf(ODD), regex=subset_regex(ODD))
        assert r.status_code == 400 and "Only one of" in r.json()["error"]["message"]
        schema = {"type": "array", "items": {"type": "string"}, "uniqueItems": False}
        r = _generate(url, json_schema=json.dumps({"type": "object", "properties": {"labels": schema}}))
        assert r.status_code == 400 and "uniqueItems" in r.json()["error"]["message"]
        r = _generate(url, json_schema={"type": "object"})
        assert r.status_code == 400 and "expected a string" in r.json()["error"]["message"]
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "ebnf": subset_ebnf(ODD),
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}
        r = httpx.post(url + "/v1/chat/completions", json=chat)
        assert r.status_code == 400 and "Only one of" in r.json()["message"]
        r = httpx.post(url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert httpx.get(url + "/stats").json()["bad_requests"] == 6


def test_endpoints_say_they_are_simulated() -> None:
    with running_sim_server(vocab=VOCAB, model_name="sim-qwen") as url:
        assert httpx.get(url + "/ready").status_code == 200
        assert httpx.get(url + "/health").headers[SIM_HEADER] == "1"
        info = httpx.get(url + "/model_info").json()
        assert info["simulated"] is True and info["has_image_understanding"] is True
        models = httpx.get(url + "/v1/models").json()
        assert models["data"][0]["id"] == "sim-qwen" and models["data"][0]["owned_by"] == "tagllm-serve-sim"
        r = _generate(url, ebnf=subset_ebnf(ODD))
        assert r.headers[SIM_HEADER] == "1"
        assert json.loads(r.json()["text"])["labels"] == []  # no image, no reference: nothing present
        assert r.json()["meta_info"]["prompt_tokens"] > 0


def test_dropped_connections_and_malformed_bodies_reach_the_client() -> None:
    with running_sim_server(vocab=VOCAB, fault_drop=1.0) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            _generate(url)
    with running_sim_server(vocab=VOCAB, fault_malformed=1.0) as url:
        r = _generate(url)
        assert r.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.text)


def test_violations_break_the_constraint() -> None:
    with running_sim_server(vocab=VOCAB, fault_violate=1.0, seed=5) as url:
        texts = {_generate(url, ebnf=subset_ebnf(ODD)).json()["text"] for _ in range(12)}
    for text in texts:
        labels = json.loads(text)["labels"]
        assert len(set(labels)) < len(labels) or not set(labels) <= set(ODD)


def test_start_server_in_a_running_loop() -> None:
    async def go() -> dict:
        runner = await start_server(vocab=VOCAB, host="127.0.0.1", port=0)
        try:
            host, port = runner.addresses[0][:2]
            async with httpx.AsyncClient() as client:
                await client.get(f"http://{host}:{port}/ready")
                return (await client.get(f"http://{host}:{port}/stats")).json() | {
                    "same": runner.app[SIM_KEY].stats.requests["ready"]}
        finally:
            await runner.cleanup()

    data = asyncio.run(go())
    assert data["requests"]["ready"] == 1 and data["same"] == 1
    assert "api_key" not in data["options"]


def test_image_prefix_hits_count_recently_seen_images() -> None:
    import base64

    def ask(url: str, image: bytes) -> None:
        body = {"text": "Which?", "image_data": "data:image/jpeg;base64," + base64.b64encode(image).decode(),
                "sampling_params": {"max_new_tokens": 8}}
        assert httpx.post(url + "/generate", json=body).status_code == 200

    with running_sim_server(vocab=VOCAB, prefix_cache_images=2) as url:
        for image in (b"a", b"a", b"b", b"c", b"a", b"c"):  # 'a' falls out when 'c' arrives (LRU of 2)
            ask(url, image)
        stats = httpx.get(url + "/stats").json()
    assert (stats["image_prefix_hits"], stats["image_prefix_misses"]) == (2, 4)
