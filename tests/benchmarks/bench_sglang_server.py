"""SGLANG-SERVER: what one image costs a real SGLang server, per request pattern SGLang accepts.

A real SGLang CPU server (the cached venv `make test-real` prepares under $REAL_CACHE, default
<repo>/.cache/real/sglang-venv) serves a tiny random Qwen2.5-VL, whose forward pass is cheap: what is
measured is SGLang's own per-request work (HTTP and JSON parsing, image loading and processing,
tokenizing, scheduling, the radix cache). First a real `tagllm build` of the demo recipe runs through
the http engine (`--api http-sglang`) and its requests are recorded; then they are replayed, one
image's stage-1 questions and then its stage-2 checks at a time, a few images in flight, in each shape:

- `per-request b64`: tagllm before it batched, one `/generate` per question with the image as a base64 data URL
  (the engine's own body bytes);
- `batch b64`: what the http engine sends now (`engines/http_batch.py`), one `/generate` per image and stage: `text` and `sampling_params` (and the logprob
  fields) as lists, the data URL once (`image_data` a single string: SGLang applies it to every item);
- `per-request path` / `batch path`: the image as a file path the server reads (the image bytes
  tagllm prepared, written once to a local file: works only where the server shares the filesystem);
- `... +hash`: `mm_content_hashes` (`sha256:` of the image bytes) with `--trust-mm-content-hashes`,
  so a preprocess-cache hit reads no media at all;

on servers without and with `--mm-preprocess-cache-size-mb 512` (radix and preprocess caches flushed
before each pattern). Per pattern: CPU seconds (user + system, from /proc) of the front process (the
launcher: HTTP server and tokenizer manager, which parses bodies, loads and processes images and
tokenizes), of the scheduler and of the detokenizer, per image; wall time; the cached share of prompt
tokens (meta_info.cached_tokens / prompt_tokens); and whether every answer (stage-1 texts, stage-2
logprobs of the yes/no ids, the labels they give) equals tagllm's pattern on the plain server. The
figure is the front CPU per image of the cheapest pattern with unchanged answers over tagllm's
(goal <= 0.1).

    .venv/bin/python tests/benchmarks/bench_sglang_server.py [--quick] [--images N] [--servers plain,mm-cache,mm-cache+trust]
        [--ports 31100-31199]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib as bl

GOAL = 0.1  # front-process CPU per image: best pattern / one call per question on a plain server
CACHE = Path(os.environ.get("REAL_CACHE") or bl.REPO / ".cache" / "real")
SGLANG_PY = CACHE / "sglang-venv" / "bin" / "python"
BASE_FLAGS = ["--device", "cpu", "--host", "127.0.0.1", "--max-total-tokens", "4096",
              "--constrained-json-disable-any-whitespace", "--served-model-name", "tiny-qwen"]
MM_CACHE = ["--mm-preprocess-cache-size-mb", "512"]
SERVERS = {"plain": [], "mm-cache": MM_CACHE, "mm-cache+trust": [*MM_CACHE, "--trust-mm-content-hashes"]}
IMAGES_IN_FLIGHT = 5  # about the engine's 64 requests in flight at ~13 requests per image
LOGPROB_TOL = 1e-4  # a pattern whose logprobs move more than this (or whose texts differ) changes answers


# --- the server ---------------------------------------------------------------------------------
def port_in(spec: str) -> int:
    low, _, high = spec.partition("-")
    for port in range(int(low), int(high or low) + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {spec}")


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One `sglang.launch_server` in its own process group; CPU by role read from /proc."""

    def __init__(self, model: Path, flags: list[str], ports: str, log: Path):
        self.port = port_in(ports)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [str(SGLANG_PY), "-m", "sglang.launch_server", "--model-path", str(model), "--port", str(self.port),
               *BASE_FLAGS, *flags]
        env = {**os.environ, "SGLANG_USE_CPU_ENGINE": "1"}
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        started = time.monotonic()
        try:
            self._wait(600)
        except BaseException:
            self.stop()
            raise
        self.startup = time.monotonic() - started
        time.sleep(2)
        before = self.cpu()
        time.sleep(3)
        self.idle = {k: (v - before.get(k, 0.0)) / 3 for k, v in self.cpu().items()}  # CPU-s per s while idle

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sglang exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"sglang not healthy after {seconds:.0f}s: {self.log.read_text()[-2000:]}")

    def roles(self) -> dict[str, int]:
        """front (the launcher), scheduler, detokenizer: pids by process title, else by start order."""
        kids = [int(p) for t in Path(f"/proc/{self.proc.pid}/task").glob("*/children")
                for p in t.read_text().split()]
        named: dict[str, int] = {"front": self.proc.pid}
        rest = []
        for pid in sorted(kids):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if "resource_tracker" in cmdline:
                continue
            role = "scheduler" if "scheduler" in cmdline else "detokenizer" if "detokenizer" in cmdline else ""
            if role:
                named[role] = pid
            else:
                rest.append(pid)
        for role in ("scheduler", "detokenizer"):  # SGLang spawns the scheduler first
            if role not in named and rest:
                named[role] = rest.pop(0)
        return named

    def cpu(self) -> dict[str, float]:
        return {role: proc_cpu(pid) for role, pid in self.roles().items()}

    def flush(self) -> None:
        with urllib.request.urlopen(urllib.request.Request(self.url + "/flush_cache", method="POST"), timeout=60):
            pass
        time.sleep(0.5)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


# --- tagllm's requests, recorded from a real build ------------------------------------------------
@dataclass
class Image:
    data: bytes
    path: Path
    stages: list[list[Any]] = field(default_factory=lambda: [[], []])  # stage-1 questions, stage-2 checks


def record_build(server: Server, out: Path, images: int) -> tuple[Any, list[Image], dict[str, Any]]:
    """A real demo build through the http engine; its requests grouped by image and stage."""
    from builder.engines.registry import engine_from_spec
    from builder.recipe.model import load_recipe
    from builder.run.build import Builder

    loaded = load_recipe(bl.DEMO_RECIPE, ["engine.kind=http", "engine.api=http-sglang", f"engine.servers=[{server.url}]",
                                          "engine.timeout=600", f"output.dir={out}", f"source.limit={images}"])
    engine = engine_from_spec(loaded.recipe.engine, loaded.vocab)
    engine.batch = False  # record one request per question: the replays regroup them per pattern
    seen: list[Any] = []
    inner = engine._generate_one

    async def recorded(request: Any) -> Any:
        seen.append(request)
        return await inner(request)

    engine._generate_one = recorded
    cpu0, started = server.cpu(), time.perf_counter()
    result = Builder(loaded, out / "build", engine=engine, overwrite=True, progress=False).run()
    wall = time.perf_counter() - started
    cpu = {k: v - cpu0.get(k, 0.0) for k, v in server.cpu().items()}
    by_image: dict[bytes, Image] = {}
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for request in seen:
        image = by_image.get(request.image)
        if image is None:
            path = folder / f"{hashlib.sha256(request.image).hexdigest()}.jpg"
            path.write_bytes(request.image)
            image = by_image[request.image] = Image(request.image, path)
        image.stages[1 if request.logprobs else 0].append(request)
    stats = {"wall": wall, "cpu": cpu, "requests": len(seen), "images": result.stats["images"],
             "ok": result.stats["ok"], "cached": result.stats.get("cached_tokens", 0),
             "prompt": result.stats.get("prompt_tokens", 0)}
    return engine, list(by_image.values()), stats


# --- the request shapes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Pattern:
    name: str
    batch: bool = False
    ref: str = "b64"  # or "path"
    hashes: bool = False


def image_ref(pattern: Pattern, image: Image) -> str:
    from builder.engines.http_wire import data_url

    return str(image.path) if pattern.ref == "path" else data_url(image.data)


def calls(engine: Any, pattern: Pattern, image: Image, requests: list[Any]) -> list[tuple[bytes, int]]:
    """(body bytes, how many answers it returns) for one image's requests of one stage."""
    from builder.engines.http_wire import native_body

    digest = "sha256:" + hashlib.sha256(image.data).hexdigest()
    if not pattern.batch and pattern.ref == "b64" and not pattern.hashes:
        return [(engine._bytes.encode(engine.wire, r), 1) for r in requests]  # the engine's own bytes
    bodies = [native_body(engine.wire, r) for r in requests]
    ref = image_ref(pattern, image)
    for body in bodies:
        body["image_data"] = ref
        if pattern.hashes:
            body["mm_content_hashes"] = [digest]
    if not pattern.batch:
        return [(json.dumps(b).encode(), 1) for b in bodies]
    batch: dict[str, Any] = {"text": [b["text"] for b in bodies], "image_data": ref,
                             "sampling_params": [b["sampling_params"] for b in bodies]}
    if pattern.hashes:
        batch["mm_content_hashes"] = [digest] * len(bodies)
    for key in sorted({k for b in bodies for k in b} - {"text", "image_data", "sampling_params", "mm_content_hashes"}):
        values = [b.get(key) for b in bodies]
        if key == "token_ids_logprob":
            batch[key] = [v or [] for v in values]  # one id list per item
        elif all(v == values[0] for v in values) and not isinstance(values[0], list):
            batch[key] = values[0]
        else:
            batch[key] = values
    return [(json.dumps(batch).encode(), len(bodies))]


@dataclass
class Answer:
    text: str
    logprobs: dict[int, float]
    prompt: int
    cached: int


def answers_of(payload: Any, count: int) -> list[Answer]:
    items = payload if isinstance(payload, list) else [payload]
    if len(items) != count or not all(isinstance(i, dict) and "text" in i for i in items):
        raise RuntimeError(f"unexpected answer: {str(payload)[:200]}")
    out = []
    for item in items:
        meta = item.get("meta_info") or {}
        first = (meta.get("output_token_ids_logprobs") or [[]])[0] or []
        out.append(Answer(str(item["text"]), {int(e[1]): float(e[0]) for e in first},
                          int(meta.get("prompt_tokens") or 0), int(meta.get("cached_tokens") or 0)))
    return out


async def replay(engine: Any, server: Server, pattern: Pattern, images: list[Image]) -> list[list[Answer]]:
    """Each image: its stage-1 calls at once, then its stage-2 calls; IMAGES_IN_FLIGHT images at a time."""
    import aiohttp

    gate = asyncio.Semaphore(IMAGES_IN_FLIGHT)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900),
                                     connector=aiohttp.TCPConnector(limit=128)) as client:
        async def post(body: bytes, count: int) -> list[Answer]:
            async with client.post(server.url + "/generate", data=body, headers=headers) as response:
                text = await response.text()
                if response.status != 200:
                    raise RuntimeError(f"{pattern.name}: HTTP {response.status}: {text[:300]}")
                return answers_of(json.loads(text), count)

        async def one(image: Image) -> list[Answer]:
            async with gate:
                got: list[Answer] = []
                for stage in image.stages:
                    parts = await asyncio.gather(*(post(b, n) for b, n in calls(engine, pattern, image, stage)))
                    got += [a for part in parts for a in part]
                return got

        return list(await asyncio.gather(*(one(image) for image in images)))


# --- comparing answers ----------------------------------------------------------------------------
def compare(engine: Any, images: list[Image], ref: list[list[Answer]], got: list[list[Answer]]) -> dict[str, Any]:
    from builder.prompts.scoring import yes_probability

    ids = engine.wire.ids
    texts = labels = 0
    worst = 0.0
    for image, ref_answers, answers in zip(images, ref, got):
        requests = image.stages[0] + image.stages[1]
        for request, a, b in zip(requests, ref_answers, answers):
            texts += a.text != b.text
            if request.logprobs:
                for token in set(a.logprobs) | set(b.logprobs):
                    x, y = a.logprobs.get(token, -math.inf), b.logprobs.get(token, -math.inf)
                    if x != y:
                        worst = max(worst, abs(x - y) if math.isfinite(x) and math.isfinite(y) else math.inf)
                pa, pb = yes_probability(a.logprobs, ids), yes_probability(b.logprobs, ids)
                labels += (pa is None) != (pb is None) or (pa is not None and pb is not None
                                                           and (pa.p_yes >= 0.5) != (pb.p_yes >= 0.5))
    return {"texts_differ": texts, "labels_differ": labels, "max_dlogprob": worst,
            "same": texts == 0 and labels == 0 and worst <= LOGPROB_TOL}


# --- the run --------------------------------------------------------------------------------------
PATTERNS = {
    "plain": [Pattern("per-request b64"), Pattern("batch b64", batch=True), Pattern("per-request path", ref="path"),
              Pattern("batch path", batch=True, ref="path")],
    "mm-cache": [Pattern("per-request b64"), Pattern("batch b64", batch=True), Pattern("per-request path", ref="path"),
                 Pattern("batch path", batch=True, ref="path")],
    "mm-cache+trust": [Pattern("per-request b64+hash", hashes=True), Pattern("batch b64+hash", batch=True, hashes=True),
                       Pattern("per-request path+hash", ref="path", hashes=True),
                       Pattern("batch path+hash", batch=True, ref="path", hashes=True)],
}
QUICK = {"plain": ["per-request b64", "batch path"], "mm-cache+trust": ["batch path+hash"]}


def measure(engine: Any, server: Server, pattern: Pattern, images: list[Image]) -> tuple[dict[str, Any], list]:
    server.flush()
    cpu0, started = server.cpu(), time.perf_counter()
    got = asyncio.run(replay(engine, server, pattern, images))
    wall = time.perf_counter() - started
    time.sleep(0.3)  # the detokenizer's last answers
    cpu = {k: v - cpu0.get(k, 0.0) for k, v in server.cpu().items()}
    flat = [a for answers in got for a in answers]
    return {"wall": wall, "cpu": cpu, "calls": sum(len(calls(engine, pattern, i, s)) for i in images for s in i.stages),
            "answers": len(flat), "prompt": sum(a.prompt for a in flat), "cached": sum(a.cached for a in flat)}, got


def row(server: str, name: str, m: dict[str, Any], n: int, check: str) -> str:
    c = m["cpu"]
    share = m["cached"] / m["prompt"] if m["prompt"] else 0.0
    return (f"{server:15s} {name:22s} front {c.get('front', 0) / n:6.3f} s/img  scheduler "
            f"{c.get('scheduler', 0) / n:6.3f}  detok {c.get('detokenizer', 0) / n:6.3f}  wall {m['wall'] / n:6.3f} s/img  "
            f"{m['calls']:4d} calls {m['answers']:4d} answers  cached {share:5.1%} of {m['prompt']} prompt tokens  {check}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 images, 3 patterns on 2 servers")
    parser.add_argument("--images", type=int, help="demo images (default 10; 3 with --quick)")
    parser.add_argument("--servers", help="comma-separated subset of: " + ", ".join(SERVERS))
    parser.add_argument("--ports", default="31100-31199", help="port range for the servers (default 31100-31199)")
    args = parser.parse_args()
    if not SGLANG_PY.exists():
        bl.info(f"SGLANG-SERVER skipped: no SGLang venv at {SGLANG_PY.parent.parent} (set REAL_CACHE, or run `make test-real`)")
        return 0
    n_images = args.images or (3 if args.quick else 10)
    chosen = args.servers.split(",") if args.servers else list(SERVERS)
    from builder.dev.tiny_vlm import make_tiny_vlm

    model = bl.bench_root() / "tiny-qwen2_5_vl"
    if not (model / "config.json").is_file():
        make_tiny_vlm(model, arch="qwen2_5_vl", seed=0)
    work = bl.scratch("sglang")
    results: list[tuple[str, Pattern, dict[str, Any], dict[str, Any]]] = []
    engine = images = ref = None
    try:
        for server_name, patterns in PATTERNS.items():
            if server_name not in chosen or (args.quick and server_name not in QUICK):
                continue
            server = Server(model, SERVERS[server_name], args.ports, work / f"{server_name}.log")
            try:
                bl.info(f"server {server_name} ({' '.join(SERVERS[server_name]) or 'no extra flags'}): healthy after "
                        f"{server.startup:.0f} s on port {server.port}; CPU while idle: " + ", ".join(
                            f"{k} {v:.2f} s/s" for k, v in server.idle.items()))
                if engine is None:
                    engine, images, build = record_build(server, work, n_images)
                    bl.info(f"tagllm build (http-sglang, records the requests; includes grammar compiles): "
                            f"{build['images']} images, {build['ok']} ok, {build['requests']} requests, "
                            f"{build['wall']:.1f} s; server CPU per image: " + ", ".join(
                                f"{k} {v / build['images']:.3f} s" for k, v in build["cpu"].items()))
                for pattern in patterns:
                    if args.quick and pattern.name not in QUICK[server_name]:
                        continue
                    m, got = measure(engine, server, pattern, images)
                    if ref is None:
                        ref = got
                    check = compare(engine, images, ref, got)
                    results.append((server_name, pattern, m, check))
                    bl.info(row(server_name, pattern.name, m, len(images), verdict(check)))
            finally:
                server.stop()
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    report(results, len(images or []))
    return 0


def verdict(check: dict[str, Any]) -> str:
    if check["same"]:
        return "answers identical" if check["max_dlogprob"] == 0 else f"answers same (max |dlogprob| {check['max_dlogprob']:.1e})"
    return (f"ANSWERS CHANGED ({check['texts_differ']} texts, {check['labels_differ']} labels, "
            f"max |dlogprob| {check['max_dlogprob']:.1e}): not adoptable")


def report(results: list, n: int) -> None:
    base = results[0][2]["cpu"].get("front", 0.0) / n
    bl.info("side by side, per image (front = launcher: HTTP, tokenizer manager, image loading and processing):")
    for server_name, pattern, m, check in results:
        bl.info("  " + row(server_name, pattern.name, m, n, verdict(check)))
    adoptable = [r for r in results if r[3]["same"]]
    best = min(adoptable, key=lambda r: r[2]["cpu"].get("front", 0.0))
    front = best[2]["cpu"].get("front", 0.0) / n
    ratio = front / base if base else float("nan")
    bl.figure("SGLANG-SERVER front-process CPU per image, best pattern / one call per question", ratio,
              f"{best[1].name} on {best[0]} {front:.3f} s vs {results[0][1].name} on {results[0][0]} {base:.3f} s, "
              f"{n} images",
              f"<= {GOAL}", ratio <= GOAL)


if __name__ == "__main__":
    sys.exit(main())
