"""The sglang engine against a recording stand-in of `sglang.Engine` (no sglang, no GPU)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from engines.standins import NO_IDS, YES_IDS, FakeProcessor, RecordingEngine

from builder.engines.base import Request
from builder.engines.sglang_engine import SglangEngine
from builder.errors import RunError
from builder.prompts.constraints import Constraint, subset_ebnf
from builder.prompts.scoring import YesNoIds

OPTIONS = ("car", "bus", "truck")


def make_engine(**kwargs: Any) -> tuple[SglangEngine, list[RecordingEngine]]:
    made: list[RecordingEngine] = []

    def factory(**server_args: Any) -> RecordingEngine:
        made.append(RecordingEngine(**server_args))
        return made[-1]

    engine = SglangEngine(model="/models/qwen", engine_factory=factory,
                          processor_factory=lambda model, **kw: FakeProcessor(), **kwargs)
    return engine, made


def stage1(image: bytes, group: str = "vehicle") -> Request:
    msgs = [{"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Which {group}?"}]}]
    return Request(msgs, image, Constraint("subset", OPTIONS), max_tokens=128, tag=f"stage1:{group}")


def stage2(image: bytes, label: str = "car") -> Request:
    msgs = [{"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Is there a {label}?"}]}]
    return Request(msgs, image, Constraint("yesno"), max_tokens=1, logprobs=True, tag=f"stage2:{label}")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_engine_args_and_lifecycle() -> None:
    engine, made = make_engine(tp_size=2, dp_size=4, mem_fraction_static=0.85, context_length=8192,
                               max_pixels=802816, disable_radix_cache=True)

    async def go() -> None:
        await engine.start()
        await engine.start()  # idempotent
        assert len(made) == 1
        args = made[0].server_args
        assert args["model_path"] == "/models/qwen"
        assert args["schedule_policy"] == "lpm" and args["grammar_backend"] == "xgrammar"
        assert args["tp_size"] == 2 and args["dp_size"] == 4
        assert args["mem_fraction_static"] == 0.85 and args["context_length"] == 8192
        assert args["mm_process_config"] == {"image": {"max_pixels": 802816}}
        assert args["disable_radix_cache"] is True  # other ServerArgs pass through
        assert args["log_level"] == "warning"  # loading progress stays visible
        assert args["mm_preprocess_cache_size_mb"] == 512  # one image preprocessed once, not per question
        assert list(engine.ids.yes) == YES_IDS and list(engine.ids.no) == NO_IDS
        await engine.close()
        await engine.close()

    run(go())
    assert made[0].shutdowns == 1


def test_no_max_pixels_means_no_mm_config() -> None:
    engine, made = make_engine()
    run(engine.start())
    assert "mm_process_config" not in made[0].server_args
    assert "mem_fraction_static" not in made[0].server_args
    run(engine.close())


def test_requests_of_one_image_go_together_and_params_are_right() -> None:
    engine, made = make_engine(concurrency=64)
    a, b, c = b"image-a", b"image-b", b"image-c"
    reqs = [stage1(a), stage1(b), stage2(a), stage1(c), stage2(b), stage2(a, "bus"), stage2(c)]

    async def go() -> list:
        async with engine:
            return await engine.generate(reqs)

    results = run(go())
    calls = made[0].calls
    images = [call["image_data"] for call in calls]
    assert images == [a, a, a, b, b, c, c], "requests about one image must be submitted together"
    for call in calls:
        prompt = call["prompt"]
        assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
        assert prompt.index("<|image_pad|>") < prompt.index("Which" if "Which" in prompt else "Is there")
        params = call["sampling_params"]
        if call["return_logprob"]:
            assert params == {"max_new_tokens": 1, "temperature": 0.0, "top_p": 1.0, "top_k": -1,
                              "repetition_penalty": 1.0}  # explicit: never the model's generation_config
            assert call["token_ids_logprob"] == YES_IDS + NO_IDS
            assert call["top_logprobs_num"] is None
        else:
            assert params["ebnf"] == subset_ebnf(OPTIONS)
            assert params["max_new_tokens"] == 128
            assert "json_schema" not in params and "regex" not in params
    assert all(r.ok for r in results)
    # answers come back in request order, with sglang's token counts
    for request, result in zip(reqs, results, strict=True):
        assert result.prompt_tokens == 321 and result.cached_tokens == 256
        if request.logprobs:
            assert result.text == "yes" and result.completion_tokens == 1
            p_yes = math.exp(-0.2) + math.exp(-3.2)
            p_no = math.exp(-1.8) + math.exp(-4.8)
            assert result.yes_prob == pytest.approx(p_yes / (p_yes + p_no))
        else:
            assert result.text == '{"labels":[]}' and result.completion_tokens == 7


def test_streamed_results_keep_their_index() -> None:
    engine, _ = make_engine()
    reqs = [stage1(b"x"), stage1(b"y"), stage2(b"x")]
    seen: dict[int, Any] = {}

    async def go() -> list:
        async with engine:
            return await engine.generate(reqs, on_result=lambda i, r: seen.__setitem__(i, r))

    results = run(go())
    assert sorted(seen) == [0, 1, 2]
    assert all(seen[i] is results[i] for i in range(3))
    assert results[2].yes_prob is not None and results[0].yes_prob is None


def test_one_bad_item_fails_alone_and_is_not_retried() -> None:
    engine, made = make_engine(retries=3, backoff=0.0)
    reqs = [stage1(b"good"), stage2(b"good"), stage1(b"bad", group="broken-group"), stage2(b"good", "bus")]

    async def go() -> list:
        await engine.start()
        made[0].fail_when = "broken-group"
        try:
            return await engine.generate(reqs)
        finally:
            await engine.close()

    results = run(go())
    assert [r.ok for r in results] == [True, True, False, True]
    assert "rejected by sglang" in results[2].error and not results[2].transient
    assert results[2].attempts == 1
    assert sum("broken-group" in c["prompt"] for c in made[0].calls) == 1


def test_top_logprobs_fallback_when_no_single_token_yes_no() -> None:
    engine, made = make_engine()

    async def go() -> Any:
        await engine.start()
        engine.ids = YesNoIds((), ())
        try:
            return (await engine.generate([stage2(b"img")]))[0]
        finally:
            await engine.close()

    result = run(go())
    call = made[0].calls[0]
    assert call["token_ids_logprob"] is None and call["top_logprobs_num"] == 20
    assert 0.0 <= result.yes_prob <= 1.0 and result.yes_prob > 0.5


def test_text_only_request_has_no_image_placeholder() -> None:
    engine, made = make_engine()
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe cats."}]}]

    async def go() -> None:
        async with engine:
            await engine.generate([Request(msgs, None, Constraint("json_schema", schema='{"type": "object"}'))])

    run(go())
    call = made[0].calls[0]
    assert "<|image_pad|>" not in call["prompt"] and call["image_data"] is None
    assert call["sampling_params"]["json_schema"] == '{"type":"object"}'


def test_start_errors_are_one_clear_line() -> None:
    with pytest.raises(RunError, match="no model given"):
        run(SglangEngine(model=None).start())

    def missing(**kwargs: Any) -> Any:
        raise ImportError("No module named 'sglang'")

    engine = SglangEngine(model="m", engine_factory=missing, processor_factory=lambda m, **kw: FakeProcessor())
    with pytest.raises(RunError, match=r"pip install -e '.\[sglang\]' in a checkout"):
        run(engine.start())

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory\nlong traceback")

    engine = SglangEngine(model="m", engine_factory=broken, processor_factory=lambda m, **kw: FakeProcessor())
    with pytest.raises(RunError, match="cannot start 'm': RuntimeError: CUDA out of memory$"):
        run(engine.start())


def test_atexit_shutdown_registered_until_close(monkeypatch: pytest.MonkeyPatch) -> None:
    import atexit

    registered: list[Any] = []
    monkeypatch.setattr(atexit, "register", lambda f: registered.append(f))
    monkeypatch.setattr(atexit, "unregister", lambda f: registered.remove(f))
    engine, made = make_engine()
    run(engine.start())
    assert len(registered) == 1
    registered[0]()  # what happens at interpreter exit (Ctrl-C included)
    assert made[0].shutdowns == 1
    run(engine.close())
    assert registered == [] and made[0].shutdowns == 1


def test_import_does_not_pull_heavy_modules() -> None:
    import subprocess
    import sys

    code = ("import sys, builder.engines.sglang_engine, builder.engines.transformers_engine, "
            "builder.engines.http, builder.dev.serve_sim, builder.dev; "
            "print(sorted(m for m in ('torch', 'transformers', 'sglang', 'xgrammar') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_second_live_engine_in_one_process_is_refused() -> None:
    """SGLang allows one engine per process (shutdown kills the process tree)."""
    first, _ = make_engine()
    second = SglangEngine(model="/models/other-llm", engine_factory=lambda **kw: RecordingEngine(),
                          processor_factory=lambda m, trust_remote_code=False: FakeProcessor())

    async def go() -> None:
        await first.start()
        try:
            with pytest.raises(RunError, match="one engine per process.*http engine"):
                await second.start()
        finally:
            await first.close()
        await second.start()  # the first is gone: now it may start
        await second.close()

    run(go())


def test_http_style_aborts_are_transient_and_dp_routing_follows_the_image() -> None:
    class Abort(Exception):
        def __init__(self, status_code: int):
            super().__init__("aborted")
            self.status_code, self.detail = status_code, "aborted"

    engine, made = make_engine(backoff=0.01)

    async def go() -> list[Any]:
        await engine.start()
        made[0].fail_with = [Abort(503), Abort(400)]
        try:
            return await engine.generate([stage2(b"img"), stage2(b"img2")])
        finally:
            await engine.close()

    results = run(go())
    assert results[0].ok and results[0].attempts == 2  # the 503 was retried
    assert not results[1].ok and "HTTP 400" in results[1].error and results[1].attempts == 1
    dp = SglangEngine(model="m", dp_size=4)
    dp.processor, dp.ids = FakeProcessor(), YesNoIds(tuple(YES_IDS), tuple(NO_IDS))
    ranks = {dp.call_args(stage2(img))["routed_dp_rank"] for img in (b"a", b"a", b"a")}
    assert len(ranks) == 1 and ranks <= set(range(4))
    assert len({dp.call_args(stage2(bytes([i])))["routed_dp_rank"] for i in range(40)}) == 4
