"""Whole request bodies validated by the pinned sglang wheel's own classes (not just field names).

`ChatCompletionRequest` (pydantic) takes every OpenAI-mode body we send to an SGLang server, and
`SamplingParams(...).verify()` every sampling dict of `/generate` and of the in-process engine; the
rendered Qwen2.5-VL prompt must match the wheel's image-token regex exactly once. The classes run
in a subprocess from the unpacked wheel, with what they import installed once into a cached
folder (.cache/sglang-contract). Without PyPI these tests skip loudly; under CI=true they fail.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from engines.standins import NO_IDS, YES_IDS, FakeProcessor, skip_or_fail
from engines.test_contracts import requests

from builder.engines.http import HttpEngine
from builder.engines.http_wire import render_chat
from builder.engines.sglang_engine import SglangEngine
from builder.prompts.render import chat
from builder.prompts.scoring import YesNoIds

pytestmark = pytest.mark.pypi

VERSION = "0.5.23"
DEPS = ("openai==2.8.0", "pybase64", "requests", "ipython")  # what protocol.py imports beyond ours
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "sglang-contract"
CHECKER = Path(__file__).with_name("sglang_classes_check.py")


def _unavailable(why: str) -> None:
    skip_or_fail(f"sglang {VERSION} classes unavailable: {why}")


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"{what}: {exc}")
        return
    if done.returncode != 0:
        _unavailable(f"{what}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")


@pytest.fixture(scope="session")
def wheel_env() -> tuple[Path, Path]:
    """(unpacked wheel root, deps folder), both cached across runs."""
    wheels_dir, root, deps = CACHE / "wheel", CACHE / f"sglang-{VERSION}", CACHE / "deps"
    if not (root / "sglang").is_dir():
        wheels = sorted(wheels_dir.glob(f"sglang-{VERSION}-*.whl"))
        if not wheels:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:",
                  "--platform", "manylinux_2_34_x86_64", "--python-version", "3.11", "--implementation", "cp",
                  f"sglang=={VERSION}", "-d", str(wheels_dir)], "pip download")
            wheels = sorted(wheels_dir.glob(f"sglang-{VERSION}-*.whl"))
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(root, [n for n in wheel.namelist() if n.startswith("sglang/")])
    if not (deps / ".complete").exists():
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(deps), *DEPS], "pip install")
        (deps / ".complete").touch()
    return root, deps


def check(wheel_env: tuple[Path, Path], chat_bodies: list, sampling: list) -> dict[str, list[str]]:
    root, deps = wheel_env
    data = json.dumps({"chat": chat_bodies, "sampling": sampling})
    done = subprocess.run([sys.executable, str(CHECKER), str(root), str(deps)], input=data,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def sglang_openai_engine() -> HttpEngine:
    engine = HttpEngine(servers=["http://x"], api="openai", server_kind="sglang", model="served-model")
    return engine


def native_engine(ids: bool) -> HttpEngine:
    engine = HttpEngine(servers=["http://x"], api="http-sglang")
    if ids:
        engine.wire.ids = YesNoIds((9891, 9454), (2152,))
    return engine


def in_process_engine() -> SglangEngine:
    engine = SglangEngine(model="m", dp_size=2)
    engine.processor = FakeProcessor()
    engine.ids = YesNoIds(tuple(YES_IDS), tuple(NO_IDS))
    return engine


def test_every_body_passes_sglangs_own_classes(wheel_env: tuple[Path, Path]) -> None:
    chat_bodies = [[f"chat/{name}", sglang_openai_engine().chat_body(r)] for name, r in requests()]
    sampling: list[Any] = []
    for ids in (False, True):
        sampling += [[f"native-{ids}/{name}", native_engine(ids).native_body(r)["sampling_params"]]
                     for name, r in requests()]
    sampling += [[f"inproc/{name}", in_process_engine().call_args(r)["sampling_params"]] for name, r in requests()]
    problems = {k: v for k, v in check(wheel_env, chat_bodies, sampling).items() if v}
    assert problems == {}
    assert len(chat_bodies) + len(sampling) == 4 * len(requests())


def test_the_classes_do_refuse_a_wrong_body(wheel_env: tuple[Path, Path]) -> None:
    """Not vacuous: an unknown field, a wrong type and a bad sampling value are all reported."""
    body = sglang_openai_engine().chat_body(requests()[0][1])
    result = check(wheel_env, [["extra", {**body, "token_ids_logprob": [1]}], ["type", {**body, "messages": 3}]],
                   [["sampling", {"max_new_tokens": 1, "temperature": -1.0}]])
    assert any("token_ids_logprob" in p for p in result["extra"])
    assert any("rejected" in p for p in result["type"])
    assert any("rejected" in p for p in result["sampling"])


def test_rendered_qwen_prompt_matches_the_wheels_image_token_regex(wheel_env: tuple[Path, Path]) -> None:
    root, _ = wheel_env
    source = (root / "sglang/srt/multimodal/processors/qwen_vl.py").read_text()
    patterns = [node.args[0].value for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "compile" and node.args
                and isinstance(node.args[0], ast.Constant) and "vision_start" in str(node.args[0].value)]
    assert patterns, "qwen_vl.py has no image-token regex any more: update this test"
    prompt = render_chat(chat("sys", "Is there a cat?"))
    assert len(re.findall(patterns[0], prompt)) == 1
    assert re.findall(patterns[0], render_chat(chat("sys", "q"), has_image=False)) == []
