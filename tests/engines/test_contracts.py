"""Contract tests: every request we build uses only names sglang 0.5.23 defines, in shapes its endpoints take.

The field names are read from the sglang wheel's source with `ast` (sglang is never imported: it
would pull in torch and the CUDA stack). When msgspec is installed, /generate bodies also go
through sglang's own generated JSON contract decoder (`sglang/api/v1/api_types.py`), the exact gate
its HTTP server applies before answering 400.
"""

from __future__ import annotations

import ast
import inspect
import json
import types
from typing import Any

import pytest
from engines.standins import NO_IDS, YES_IDS, FakeProcessor, RecordingEngine

from builder.dev.serve_sim import SGLANG_SAMPLING_KEYS
from builder.engines.base import Request
from builder.engines.http import HttpEngine
from builder.engines.sglang_engine import SglangEngine
from builder.prompts.constraints import Constraint
from builder.prompts.render import chat
from builder.prompts.scoring import YesNoIds

pytestmark = pytest.mark.pypi

IMAGE = b"\xff\xd8\xff\xe0fake-jpeg-bytes"
OPTIONS = ("car", "bus", "dining table", 'odd "quoted" label')


# --- reading sglang's definitions ---------------------------------------------------------------
def class_fields(source: str, class_name: str) -> set[str]:
    """Names a class declares: annotated class attributes (dataclass / msgspec / pydantic fields)
    plus the parameters of its `__init__`, if it has one."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            names: set[str] = set()
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    if not item.target.id.startswith("_"):
                        names.add(item.target.id)
                elif isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    names |= {a.arg for a in item.args.args + item.args.kwonlyargs if a.arg != "self"}
            return names
    raise AssertionError(f"class {class_name} not found")


def class_bases(source: str, class_name: str) -> list[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return [b.id for b in node.bases if isinstance(b, ast.Name)]
    return []


def fields_with_bases(source: str, class_name: str) -> set[str]:
    names = class_fields(source, class_name)
    for base in class_bases(source, class_name):
        try:
            names |= fields_with_bases(source, base)
        except AssertionError:
            pass  # a base from another module (BaseModel, ...)
    return names


def method_params(source: str, class_name: str, method: str) -> set[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == method:
                    args = item.args
                    return {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg != "self"}
    raise AssertionError(f"{class_name}.{method} not found")


class Contract:
    """The names sglang 0.5.23 accepts, per place a name can go."""

    def __init__(self, src: dict[str, str]):
        self.request_fields = class_fields(src["sglang/srt/managers/io_struct.py"], "GenerateReqInput")
        self.sampling_fields = class_fields(src["sglang/srt/sampling/sampling_params.py"], "SamplingParams")
        api = src.get("sglang/api/v1/api_types.py")
        # The HTTP contract (newer wheels) narrows both; when present, a name must pass both.
        self.http_request_fields = class_fields(api, "GenerateRequest") if api else self.request_fields
        self.http_sampling_fields = class_fields(api, "SamplingParams") if api else self.sampling_fields
        self.async_generate_params = method_params(src["sglang/srt/entrypoints/engine.py"], "Engine",
                                                   "async_generate")
        protocol = src.get("sglang/srt/entrypoints/openai/protocol.py")
        self.chat_fields = fields_with_bases(protocol, "ChatCompletionRequest") if protocol else set()
        self.server_args: set[str] = set()
        for name, text in src.items():
            if name.startswith("sglang/srt/arg_groups/fields/"):
                for node in ast.walk(ast.parse(text)):
                    if isinstance(node, ast.ClassDef):
                        self.server_args |= class_fields(text, node.name)

    def generate_body_problems(self, body: dict[str, Any]) -> list[str]:
        """Names in a /generate body that sglang does not define (empty list = fine)."""
        problems = [f"{k} (not a GenerateReqInput field)" for k in body if k not in self.request_fields]
        problems += [f"{k} (not in the /generate HTTP contract)" for k in body if k not in self.http_request_fields]
        params = body.get("sampling_params") or {}
        problems += [f"sampling_params.{k} (not a SamplingParams field)" for k in params
                     if k not in self.sampling_fields]
        problems += [f"sampling_params.{k} (rejected by the /generate HTTP contract)" for k in params
                     if k not in self.http_sampling_fields]
        return problems


@pytest.fixture(scope="module")
def contract(sglang_source: dict[str, str]) -> Contract:
    return Contract(sglang_source)


@pytest.fixture(scope="module")
def api_types(sglang_source: dict[str, str]) -> types.ModuleType:
    """sglang's generated /generate JSON decoder, loaded from the wheel's text (needs only msgspec)."""
    pytest.importorskip("msgspec", reason="msgspec runs sglang's own /generate contract decoder")
    text = sglang_source.get("sglang/api/v1/api_types.py")
    if text is None:
        pytest.skip("this sglang wheel has no api/v1/api_types.py")
    module = types.ModuleType("sglang_api_types_from_wheel")
    exec(compile(text, "sglang/api/v1/api_types.py", "exec"), module.__dict__)
    return module


# --- the requests we build ------------------------------------------------------------------------
def requests() -> list[tuple[str, Request]]:
    msgs = chat("You are a careful image annotator.", "Which vehicle objects are visible?")
    yes_msgs = chat("You are a careful image annotator.", "Is there a car in this image? Answer yes or no.")
    schema = json.dumps({"type": "object", "properties": {"description": {"type": "string"}},
                         "required": ["description"]})
    return [
        ("subset", Request(msgs, IMAGE, Constraint("subset", OPTIONS), max_tokens=256)),
        ("subset-seeded", Request(msgs, IMAGE, Constraint("subset", OPTIONS), temperature=0.7, seed=1234)),
        ("yesno-scored", Request(yes_msgs, IMAGE, Constraint("yesno"), max_tokens=1, logprobs=True)),
        ("yesno-plain", Request(yes_msgs, IMAGE, Constraint("yesno"), max_tokens=1)),
        ("json-schema", Request(msgs, None, Constraint("json_schema", schema=schema))),
        ("free", Request(msgs, IMAGE, Constraint("free"), max_tokens=32)),
    ]


def native_engines() -> list[HttpEngine]:
    return [
        HttpEngine(servers=["http://x"], api="http-sglang"),
        HttpEngine(servers=["http://x"], api="http-sglang", yes_token_ids=[9891, 9454], no_token_ids=[2152]),
    ]


def all_native_bodies() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{name}/{'ids' if e.yes_token_ids else 'top'}", e.native_body(r))
            for e in native_engines() for name, r in requests()]


# --- SGLang native /generate ---------------------------------------------------------------------
@pytest.mark.parametrize("name,body", all_native_bodies(), ids=[n for n, _ in all_native_bodies()])
def test_generate_bodies_use_only_sglang_names(contract: Contract, name: str, body: dict[str, Any]) -> None:
    assert contract.generate_body_problems(body) == []
    grammars = [k for k in ("json_schema", "regex", "ebnf", "structural_tag") if k in body["sampling_params"]]
    assert len(grammars) <= 1, "sglang refuses two constraints"
    if "json_schema" in body["sampling_params"]:
        assert isinstance(body["sampling_params"]["json_schema"], str), "json_schema must be a JSON string"
    if body.get("image_data") is not None:
        assert body["image_data"].startswith("data:image/jpeg;base64,")


def test_checker_reports_a_wrong_name(contract: Contract) -> None:
    """The check is not vacuous: `max_tokens` (the OpenAI name) is not a sampling param."""
    body = HttpEngine(servers=["http://x"], api="http-sglang").native_body(requests()[0][1])
    body["sampling_params"]["max_tokens"] = body["sampling_params"].pop("max_new_tokens")
    body["logprobs"] = True
    problems = contract.generate_body_problems(body)
    assert "sampling_params.max_tokens (not a SamplingParams field)" in problems
    assert "logprobs (not a GenerateReqInput field)" in problems


def test_generate_bodies_pass_sglangs_own_contract_decoder(api_types: types.ModuleType) -> None:
    for _name, body in all_native_bodies():
        api_types.GenerateRequest.from_json_value(json.loads(json.dumps(body)))  # raises on a violation
    bad = all_native_bodies()[0][1]
    bad["sampling_params"]["max_tokens"] = 5
    with pytest.raises(api_types.JsonContractError, match="max_tokens"):
        api_types.GenerateRequest.from_json_value(bad)


def test_serve_sim_accepts_no_sampling_key_sglang_refuses(contract: Contract) -> None:
    assert SGLANG_SAMPLING_KEYS <= contract.http_sampling_fields
    assert SGLANG_SAMPLING_KEYS <= contract.sampling_fields | {"watermark"}


# --- in-process sglang.Engine ---------------------------------------------------------------------
def test_sglang_engine_calls_use_only_async_generate_params(contract: Contract) -> None:
    engine = SglangEngine(model="m")
    engine.processor = FakeProcessor()
    engine.ids = YesNoIds(tuple(YES_IDS), tuple(NO_IDS))
    for name, request in requests():
        args = engine.call_args(request)
        assert set(args) <= contract.async_generate_params, name
        assert set(args["sampling_params"]) <= contract.sampling_fields, name
        assert set(args["sampling_params"]) <= contract.http_sampling_fields, name


def test_sglang_engine_server_args_exist(contract: Contract) -> None:
    assert contract.server_args, "no ServerArgs fields found in the wheel"
    engine = SglangEngine(model="m", tp_size=2, dp_size=2, mem_fraction_static=0.8, context_length=4096,
                          max_pixels=1024 * 1024, enable_metrics=True)
    names = set(engine.server_args) | {"model_path"}
    assert names <= contract.server_args, names - contract.server_args


def test_recording_stand_in_matches_async_generate(contract: Contract) -> None:
    params = set(inspect.signature(RecordingEngine.async_generate).parameters) - {"self", "kwargs"}
    assert params <= contract.async_generate_params


# --- OpenAI-compatible chat (SGLang, vLLM, hosted) -------------------------------------------------
def _walk_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _walk_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _walk_keys(v)}
    return set()


def _check_chat_shape(body: dict[str, Any], request: Request) -> None:
    assert isinstance(body["model"], str) and body["model"]
    assert isinstance(body["max_tokens"], int) and body["max_tokens"] >= 1
    roles = [m["role"] for m in body["messages"]]
    assert roles[-1] == "user" and set(roles) <= {"system", "user"}
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            assert "<image>" not in content and "<|image_pad|>" not in content
            continue
        for part in content:
            assert part["type"] in ("text", "image_url")
            if part["type"] == "image_url":
                assert set(part) == {"type", "image_url"}
                assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")
            else:
                assert "<image>" not in part["text"] and "<|image_pad|>" not in part["text"]
    images = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]
              if p["type"] == "image_url"]
    assert len(images) == (1 if request.image is not None else 0)
    user = body["messages"][-1]["content"]
    if images:
        assert user[0]["type"] == "image_url", "image before the question (prefix caching)"
    if "response_format" in body:
        rf = body["response_format"]
        assert rf["type"] == "json_schema" and isinstance(rf["json_schema"]["name"], str)
        assert isinstance(rf["json_schema"]["schema"], dict)
        assert "uniqueItems" not in _walk_keys(rf["json_schema"]["schema"]), "sglang/vLLM refuse uniqueItems"
    if body.get("logprobs"):
        assert body["logprobs"] is True
        assert isinstance(body["top_logprobs"], int) and 0 <= body["top_logprobs"] <= 20
        assert body["max_tokens"] == 1
    forms = [k for k in ("response_format", "ebnf", "regex", "structured_outputs") if k in body]
    assert len(forms) <= 1, f"one constraint form per request, got {forms}"


@pytest.mark.parametrize("api,server_kind", [("openai", "sglang"), ("openai", "openai"), ("vllm", None)])
def test_chat_bodies_have_the_shape_servers_accept(contract: Contract, api: str, server_kind: str | None) -> None:
    engine = HttpEngine(servers=["http://x"], api=api, server_kind=server_kind, model="served-model")
    for name, request in requests():
        body = engine.chat_body(request)
        _check_chat_shape(body, request)
        if server_kind == "sglang":
            assert set(body) <= contract.chat_fields, (name, set(body) - contract.chat_fields)
        if api == "vllm" and request.constraint.kind == "subset":
            assert isinstance(body["structured_outputs"]["grammar"], str)
            assert body["structured_outputs"]["grammar"].startswith("root ::=")
        if server_kind == "sglang" and request.constraint.kind == "subset":
            assert body["ebnf"].startswith("root ::=") and "response_format" not in body
        if server_kind == "openai" and request.constraint.kind == "subset":
            items = body["response_format"]["json_schema"]["schema"]["properties"]["labels"]
            assert items["items"]["enum"] == list(OPTIONS) and items["maxItems"] == len(OPTIONS)
            assert "ebnf" not in body and "structured_outputs" not in body


def test_shipped_server_args_list_matches_the_wheel(contract: Contract) -> None:
    """`tagllm recipe check` checks engine.args against a shipped list: it must be the wheel's."""
    from builder.engines.sglang_params import server_arg_names

    assert server_arg_names() == contract.server_args


def test_recipe_check_names_an_unknown_sglang_arg() -> None:
    from types import SimpleNamespace

    from builder.engines.registry import check_engine_spec
    from builder.errors import UserError

    check_engine_spec(SimpleNamespace(kind="sglang", args={"tp_size": 2, "max_pixels": 10, "dp_size": 2}))
    with pytest.raises(UserError, match="engine.args: tensor_parallel: not a field of sglang's ServerArgs"):
        check_engine_spec(SimpleNamespace(kind="sglang", args={"tp_size": 2, "tensor_parallel": 2}))
    check_engine_spec(SimpleNamespace(kind="http", args={"anything": 1}))  # only sglang args are ServerArgs
