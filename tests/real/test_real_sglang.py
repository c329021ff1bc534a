"""tagllm against real SGLang 0.5.23 on CPU serving a tiny random Qwen2.5-VL (`make test-real` makes the venv).

The model is random: its answers are noise, so these tests assert the protocol (every item ok, every
stage-1 answer valid under the ordered-subset grammar, every candidate scored from logprobs, SGLang's own
cached-token counts carried into stats, JSON answers valid under their schemas), and that the ways of
reaching SGLang agree with each other on every label, never label quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from real.conftest import REPO, SGLANG_PY, SglangServer, build, need

from builder.prompts.constraints import json_answer, parse_subset
from builder.recipe.model import load_recipe

pytestmark = [pytest.mark.real, pytest.mark.timeout(1500)]

VOCAB = load_recipe(REPO / "recipes" / "demo.yaml", []).vocab
OPTIONS = {group.name: [label.name for label in group.labels] for group in VOCAB.groups}


@pytest.fixture(scope="module")
def sglang(tiny_qwen: Path, tmp_path_factory: pytest.TempPathFactory):
    server = SglangServer(tiny_qwen, tmp_path_factory.mktemp("sglang-log") / "sglang.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def builds(sglang: SglangServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo built over SGLang's native /generate and over its OpenAI chat endpoint (kind detected)."""
    root = tmp_path_factory.mktemp("sglang-builds")
    out = {}
    for api in ("http-sglang", "openai"):
        out[api] = build(root, api, ["engine.kind=http", f"engine.api={api}", f"engine.servers=[{sglang.url}]",
                                     "engine.model=tiny-qwen", "engine.timeout=300"])
    return out


def check_stage1(records: list) -> int:
    """Every stage-1 answer is the ordered subset the grammar allows: valid JSON, known labels, vocabulary
    order, no repeats. Returns how many answers were checked."""
    checked = 0
    for record in records:
        for raw in record.raw:
            if raw["tag"].startswith("subset:"):
                group = raw["tag"].split(":")[1]
                listed = json.loads(raw["text"])["labels"]
                assert listed == parse_subset(raw["text"], OPTIONS[group]), (record.key, raw)
                checked += 1
    return checked


@pytest.mark.parametrize("api", ["http-sglang", "openai"])
def test_demo_on_real_sglang(builds: dict, api: str) -> None:
    stats, records, result = builds[api]
    candidates = sum(len(r.candidates) for r in records)
    scored = sum(1 for r in records for raw in r.raw if raw["tag"].startswith("verify:") and "yes_prob" in raw)
    answers = check_stage1(records)
    flags = result.engine.get("server_info", {}).get("sglang_flags", {})
    print(f"\n[sglang {api}] images {stats['images']} ok {stats['ok']} failed {stats['failed']} "
          f"{stats['failed_by_reason']} stage-1 answers {answers} candidates {candidates} scored {scored} "
          f"prompt_tokens {stats['prompt_tokens']} cached_tokens {stats['cached_tokens']} "
          f"({stats['cached_tokens'] / max(1, stats['prompt_tokens']):.1%}) sent {result.sent} "
          f"kind {result.engine.get('server_kind')} flags {flags}", file=sys.stderr)
    assert result.engine["server_kind"] == "sglang"  # detected from the server when --api openai
    assert stats["ok"] == stats["images"] == 25, stats["failed_by_reason"]
    assert answers == 25 * len(VOCAB.groups)
    assert candidates == scored > 0
    assert 0 < stats["cached_tokens"] < stats["prompt_tokens"]  # SGLang's own counts, carried into stats
    assert flags.get("enable_cache_report") is True and flags.get("version") == "0.5.23"
    assert not result.simulated


def test_native_and_chat_endpoints_give_the_same_labels(builds: dict) -> None:
    """Same prompts, greedy, the same grammar: both endpoints must label every image alike, and the chat
    endpoint's yes/no scores (read under an equal logit bias) must be the native token-id scores."""
    native = {r.key: r for r in builds["http-sglang"][1]}
    chat = {r.key: r for r in builds["openai"][1]}
    assert native.keys() == chat.keys()
    for key, record in native.items():
        assert chat[key].candidates == record.candidates, key
        assert chat[key].labels == record.labels, key
        assert chat[key].scores.keys() == record.scores.keys()
        for label, score in record.scores.items():
            assert chat[key].scores[label] == pytest.approx(score, abs=1e-4), (key, label)


def test_in_process_sglang_engine_on_cpu(builds: dict, tiny_qwen: Path, tmp_path: Path) -> None:
    """`--engine sglang` in one process (SGLang's own venv, this checkout on PYTHONPATH): the same build."""
    need(SGLANG_PY, "make test-real")
    out = tmp_path / "in-process"
    cmd = [str(SGLANG_PY), "-m", "builder", "build", str(REPO / "recipes" / "demo.yaml"), "--engine", "sglang",
           "--model", str(tiny_qwen), "--out", str(out), "--no-progress",
           "--set", "engine.args={device: cpu, max_total_tokens: 8192}",
           "--set", "engine.timeout=300"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    print(f"\n[sglang in-process] rc {done.returncode}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}", file=sys.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    from builder.publish import layout

    records = {r.key: r for r in layout.iter_records(out)}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["ok"] == stats["images"] == 25
    assert check_stage1(records.values()) == 25 * len(VOCAB.groups)
    assert sum(len(r.candidates) for r in records.values()) == sum(len(r.scores) for r in records.values()) > 0
    assert stats["cached_tokens"] > 0
    native = {r.key: r for r in builds["http-sglang"][1]}
    agree = sum(records[k].labels == native[k].labels for k in native)
    print(f"[sglang in-process] labels equal to the http-sglang build for {agree} of {len(native)} images",
          file=sys.stderr)


def authoring_requests() -> list:
    """The JSON-schema requests of `vocab init --engine`, `concepts init --engine` and calibrate's proposals."""
    from builder.method.authoring import CONCEPTS_SCHEMA, GROUPS_SCHEMA, _request, groups_prompt
    from builder.method.calibration import revision_request

    return [_request(groups_prompt(VOCAB.names[:12]), GROUPS_SCHEMA, "vocab-init", 4096),
            _request("Labels: " + ", ".join(VOCAB.names[:6]), CONCEPTS_SCHEMA, "concepts-init:demo", 4096),
            revision_request("Revise the entry of 'dog'.", VOCAB.names)]


@pytest.mark.parametrize("api", ["http-sglang", "openai"])
def test_json_answers_parse_under_their_schemas(sglang: SglangServer, api: str) -> None:
    import asyncio

    from builder.engines.http import HttpEngine

    requests = authoring_requests()

    async def ask() -> list:
        engine = HttpEngine(servers=[sglang.url], api=api, model="tiny-qwen", timeout=300)
        await engine.start()
        try:
            return await engine.generate(requests)
        finally:
            await engine.close()

    for request, result in zip(requests, asyncio.run(ask())):
        print(f"\n[sglang {api} json] {request.tag}: {result.completion_tokens} tokens {result.text[:120]!r}",
              file=sys.stderr)
        assert result.ok, result.error
        jsonschema.validate(json_answer(result.text), json.loads(request.constraint.schema))


def test_authoring_commands_against_real_sglang(sglang: SglangServer, tmp_path: Path) -> None:
    """The commands themselves, end to end: each writes its draft with every label of the input kept."""
    labels = tmp_path / "labels.txt"
    labels.write_text("animal:\ncat\ndog\nvehicle:\ncar\nbicycle\n")
    tagllm = Path(sys.executable).parent / "tagllm"
    engine = ["--engine", "http", "--server", sglang.url, "--model", "tiny-qwen"]
    for cmd in ([str(tagllm), "vocab", "init", str(labels), "--out", str(tmp_path / "vocab.yaml"), *engine],
                [str(tagllm), "concepts", "init", str(tmp_path / "vocab.yaml"), "--out",
                 str(tmp_path / "concepts.yaml"), *engine]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        print(f"\n[sglang authoring] {' '.join(cmd[1:3])}: rc {done.returncode} {done.stdout[-400:]}", file=sys.stderr)
        assert done.returncode == 0, done.stderr[-2000:]
    from builder.recipe.concepts import load_concept_sheet
    from builder.recipe.vocab import load_vocabulary

    names = sorted(load_vocabulary(tmp_path / "vocab.yaml").names)
    assert names == ["bicycle", "car", "cat", "dog"]
    assert sorted(load_concept_sheet(tmp_path / "concepts.yaml").concepts) == names


def test_a_model_sglang_does_not_serve_is_refused_before_any_request(sglang: SglangServer, tmp_path: Path) -> None:
    from builder.errors import RunError

    with pytest.raises(RunError) as err:
        build(tmp_path, "wrong-model", ["engine.kind=http", "engine.api=openai", f"engine.servers=[{sglang.url}]",
                                        "engine.model=my-model"])
    print(f"\n[sglang wrong model] {err.value}", file=sys.stderr)
    assert "'my-model'" in str(err.value) and "tiny-qwen" in str(err.value)
    assert not (tmp_path / "wrong-model" / "index").exists()
