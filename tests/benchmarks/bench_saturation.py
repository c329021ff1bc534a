"""P2 saturation: the http engine against `tagllm serve-sim` (capacity C, latency L) -> req/s / (C/L).

Each serve-sim runs in its own process (`python -m builder serve-sim RECIPE --latency L --capacity C`),
so client and server do not share one GIL; they do share the machine's cores (2 on the dev box),
which the figure includes. Measured, for one server and for two (ideal 2C/L):

- engine: `HttpEngine.generate` on N prepared requests (the stage-1 group questions and the
  stage-2 checks of real images, as a tagllm build sends them), client concurrency 2C per server;
- build: a full in-process `tagllm build` through the http engine (openai API, strategy tagllm),
  engine.concurrency 2C per server.

- plain: a bare aiohttp client posting the same bodies (made beforehand by the engine's own body
  builders), round-robin, same concurrency: the floor a client can reach against these servers.

Rates count requests from the first one sent to the last answer (the window); a build's whole wall
time (start, probes, finalize, card) is shown beside it. The figure is engine / plain (goal >= 0.97),
worst over server counts; the ratios to the ideal C/L are printed beside it with the CPU each
process used per request, so a CPU-bound case (client and servers sharing too few cores) is reported
as such. With several servers and an engine that routes by image, image-affine routing is run
against least-loaded, with the image prefix hits each serve-sim counted.

    .venv/bin/python tests/benchmarks/bench_saturation.py [--quick] [--reps R] [--api openai|http-sglang]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib as bl

GOAL = 0.97  # engine / plain client; the ideal C/L is shown beside it


class Window:
    """First request start / last answer end seen by an engine (its `_generate_one` hook wrapped)."""

    def __init__(self) -> None:
        self.first = float("inf")
        self.last = 0.0
        self.count = 0
        self.errors = 0

    def wrap(self, engine: Any) -> Any:
        inner = engine._generate_one

        async def timed(request: Any) -> Any:
            self.first = min(self.first, time.perf_counter())
            try:
                result = await inner(request)
            except Exception:
                self.errors += 1
                raise
            finally:
                self.last = max(self.last, time.perf_counter())
                self.count += 1
            return result

        engine._generate_one = timed
        return engine

    @property
    def seconds(self) -> float:
        return max(1e-9, self.last - self.first)


class SimServers:
    """serve-sim processes over one recipe; optionally each under cProfile (stats written at exit)."""

    def __init__(self, recipe: Path, count: int, capacity: int, latency: float, profile_dir: Path | None = None):
        self.urls: list[str] = []
        self.procs: list[subprocess.Popen] = []
        env = bl.python_env()
        for i in range(count):
            port = bl.free_port()
            cmd = [sys.executable]
            if profile_dir is not None:
                cmd += ["-m", "cProfile", "-o", str(profile_dir / f"server{i}.prof")]
            cmd += ["-m", "builder", "serve-sim", str(recipe), "--port", str(port),
                    "--latency", str(latency), "--capacity", str(capacity),
                    # about the images in flight at capacity C (15 requests each): what a server's
                    # prefix cache could hold while busy, so routing that scatters an image shows
                    "--prefix-cache-images", str(max(2, capacity // 8))]
            proc = subprocess.Popen(cmd, cwd=bl.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.procs.append(proc)
            self.urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(self.urls, self.procs):
            bl.wait_ready(url, proc, timeout=300)

    def generation_requests(self) -> int:
        return sum(int(bl.get_json(u + "/stats").get("generation_requests", 0)) for u in self.urls)

    def stats(self) -> list[dict]:
        return [bl.get_json(u + "/stats") for u in self.urls]

    def cpu(self) -> list[float]:
        """CPU seconds each server process has used so far (user + system, from /proc)."""
        ticks = os.sysconf("SC_CLK_TCK")
        out = []
        for proc in self.procs:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                out.append((int(fields[11]) + int(fields[12])) / ticks)
            except (OSError, IndexError, ValueError):
                out.append(float("nan"))
        return out

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # serve() returns on KeyboardInterrupt (cProfile then writes)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def make_requests(loaded: Any, n: int) -> tuple[list[Any], int]:
    """At least n requests as a tagllm build makes them: 12 group questions + checks of the true labels."""
    from builder.images import prepare_image
    from builder.method.base import TaggingContext
    from builder.method.candidates import group_requests
    from builder.method.verify import verify_request
    from builder.sources import open_source

    ctx = TaggingContext(loaded)
    recipe = loaded.recipe
    requests: list[Any] = []
    images = 0
    for item in open_source(recipe.source, loaded.vocab, loaded.base_dir):
        prepared = prepare_image(item.image, recipe.engine.max_pixels, recipe.output.max_image_pixels)
        requests += group_requests(ctx, prepared.data)
        requests += [verify_request(ctx, label, prepared.data) for label in item.reference or []]
        images += 1
        if len(requests) >= n:
            break
    return requests[:n], images


def run_engine(urls: list[str], api: str, requests: list[Any], concurrency: int, vocab: Any) -> tuple[Window, int]:
    return run_engine_routed(urls, api, requests, concurrency, vocab, "image-affine")


def _least_loaded(engine: Any) -> None:
    """Route this engine's requests to the least-loaded server, ignoring which image they carry."""
    def pick(*_args: Any) -> str:
        return min(engine.servers, key=lambda s: engine._in_flight[s])

    engine._pick = pick


def run_engine_routed(urls: list[str], api: str, requests: list[Any], concurrency: int, vocab: Any,
                      routing: str) -> tuple[Window, int]:
    from builder.engines.http import HttpEngine

    async def go() -> tuple[Window, int]:
        engine = HttpEngine(servers=urls, api=api, concurrency=concurrency, timeout=60.0)
        if routing == "least-loaded":
            _least_loaded(engine)
        window = Window()
        window.wrap(engine)
        await engine.start()
        try:
            results = await engine.generate(requests)
        finally:
            await engine.close()
        return window, sum(1 for r in results if not r.ok)

    return asyncio.run(go())


def plain_bodies(urls: list[str], api: str, requests: list[Any], vocab: Any) -> list[tuple[str, bytes]]:
    """(path, JSON bytes) of every request, made by the engine's own body builders, before timing."""
    import json

    from builder.engines.http import HttpEngine

    engine = HttpEngine(servers=urls, api=api, concurrency=1, timeout=60.0)
    if api == "http-sglang":
        return [("/generate", json.dumps(engine.native_body(r)).encode()) for r in requests]
    return [("/v1/chat/completions", json.dumps(engine.chat_body(r)).encode()) for r in requests]


def run_plain(urls: list[str], bodies: list[tuple[str, bytes]], concurrency: int) -> tuple[float, int]:
    """The floor: a bare aiohttp client posting ready-made bodies round-robin; (seconds, errors)."""
    import json

    import aiohttp

    async def go() -> tuple[float, int]:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        gate = asyncio.Semaphore(concurrency)
        errors = 0
        async with aiohttp.ClientSession(connector=connector, headers={"Content-Type": "application/json"}) as http:
            async def one(i: int, path: str, body: bytes) -> None:
                nonlocal errors
                async with gate:
                    async with http.post(urls[i % len(urls)] + path, data=body) as response:
                        payload = json.loads(await response.read())
                        errors += response.status != 200 or not isinstance(payload, dict)

            started = time.perf_counter()
            await asyncio.gather(*(one(i, p, b) for i, (p, b) in enumerate(bodies)))
            return time.perf_counter() - started, errors

    return asyncio.run(go())


def run_build(data: dict, out: Path) -> tuple[Window, float, Any]:
    from builder.engines.registry import engine_from_spec
    from builder.run.build import Builder

    loaded = bl.load(data)
    engine = engine_from_spec(loaded.recipe.engine, loaded.vocab)
    window = Window()
    window.wrap(engine)
    started = time.perf_counter()
    result = Builder(loaded, out, engine=engine, overwrite=True, progress=False).run()
    return window, time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    parser.add_argument("--reps", type=int, help="repetitions of each case (default 3; quick 1)")
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, help="ideal seconds per run (default 4; quick 1)")
    parser.add_argument("--api", default="openai", choices=["openai", "http-sglang", "vllm"])
    parser.add_argument("--servers", default="1,2", help="server counts to run (default 1,2)")
    parser.add_argument("--cases", default="engine,build", help="cases to run (default engine,build)")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of client and servers into this folder")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    seconds = args.seconds or (1.0 if args.quick else 4.0)
    C, L = args.capacity, args.latency
    width, height = (320, 240) if args.quick else (640, 480)
    server_counts = [int(s) for s in args.servers.split(",") if s.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]

    per_image = 15  # tagllm on COCO-80 with ~2.9 labels/image: 12 group questions + ~3 checks
    folder = bl.photo_folder(120 if args.quick else 2000, width, height)
    available, size = bl.folder_bytes(folder)
    need_images = min(available, int(max(server_counts) * C / L * seconds / per_image * 1.2) + 8)
    work = bl.scratch("saturation")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, int], list[tuple[float, str]]] = {}
    cpu_log: dict[tuple[str, int], list[tuple[float, float, list[float], float, list]]] = {}
    try:
        server_recipe = bl.write_recipe(work / "server.yaml", bl.recipe_data(folder, work / "unused", limit=need_images))
        loaded = bl.load(bl.recipe_data(folder, work / "unused", limit=need_images))
        pool, pool_images = make_requests(loaded, int(max(server_counts) * C / L * seconds))
        for count in server_counts:
            ideal = count * C / L
            concurrency = 2 * C * count
            servers = SimServers(server_recipe, count, C, L, args.profile)
            try:
                # warm up (connections, first calls) and size the runs to about `seconds` at the rate seen,
                # so a slow client does not make the benchmark run for minutes
                probe = pool[: min(len(pool), 8 * C)]
                window, _ = run_engine(servers.urls, args.api, probe, concurrency, loaded.vocab)
                seen = len(probe) / window.seconds
                n = max(4 * C, min(int(ideal * seconds), int(seen * seconds * 1.2), len(pool)))
                bl.info(f"P2 x{count}: probe {len(probe)} requests at {seen:.0f} req/s; runs of {n} requests")
                if "engine" in cases:
                    requests = pool[:n]
                    bodies = plain_bodies(servers.urls, args.api, requests, loaded.vocab)
                    routes = ["image-affine", "least-loaded"] if count > 1 else []

                    def measure(side: str, count: int = count, requests: list = requests, bodies: list = bodies,
                                servers: SimServers = servers, concurrency: int = concurrency) -> None:
                        before, stats0 = servers.generation_requests(), servers.stats()
                        cpu0, server_cpu0 = bl.cpu_seconds(), servers.cpu()
                        if side == "plain":
                            seconds, errors = run_plain(servers.urls, bodies, concurrency)
                        else:
                            routing = "least-loaded" if side == "engine-least-loaded" else "default"
                            window, errors = run_engine_routed(servers.urls, args.api, requests, concurrency,
                                                               loaded.vocab, routing)
                            seconds = window.seconds
                        client_cpu = bl.cpu_seconds() - cpu0
                        server_cpu = [b - a for a, b in zip(server_cpu0, servers.cpu())]
                        got = servers.generation_requests() - before
                        hits = [(b["image_prefix_hits"] - a["image_prefix_hits"],
                                 b["image_prefix_misses"] - a["image_prefix_misses"])
                                for a, b in zip(stats0, servers.stats()) if "image_prefix_hits" in b]
                        rate = len(requests) / seconds
                        ideal = count * C / L
                        results.setdefault((side, count), []).append(
                            (rate / ideal, f"{len(requests)} requests in {seconds:.2f} s = {rate:.0f} req/s, "
                                           f"concurrency {concurrency}, servers got {got}, errors {errors}"))
                        cpu_log.setdefault((side, count), []).append(
                            (rate, 1000 * client_cpu / len(requests), [1000 * c / len(requests) for c in server_cpu],
                             (client_cpu + sum(server_cpu)) / seconds, hits))

                    for rep in range(reps):
                        sides = ["engine", "plain"] + (["engine-least-loaded"] if routes else [])
                        for side in (sides if rep % 2 == 0 else sides[::-1]):
                            measure(side)
                if "build" in cases:
                    images = min(need_images, max(8, n // per_image))
                    data = bl.recipe_data(
                        folder, work / "build", limit=images,
                        engine={"kind": "http", "servers": servers.urls, "api": args.api,
                                "concurrency": concurrency, "timeout": 60.0})
                    warm = dict(data, source={**data["source"], "limit": 4})
                    run_build(warm, work / "build")  # first build in the process: imports, first calls
                    for rep in range(reps):
                        before = servers.generation_requests()
                        if args.profile and rep == 0:
                            import cProfile

                            profiler = cProfile.Profile()
                            profiler.enable()
                            window, wall, result = run_build(data, work / "build")
                            profiler.disable()
                            profiler.dump_stats(str(args.profile / f"client-build-{count}.prof"))
                        else:
                            window, wall, result = run_build(data, work / "build")
                        got = servers.generation_requests() - before
                        rate = window.count / window.seconds
                        results.setdefault(("build", count), []).append(
                            (rate / ideal, f"{images} images, {window.count} requests in {window.seconds:.2f} s = "
                                           f"{rate:.0f} req/s, concurrency {concurrency} (whole build {wall:.2f} s = "
                                           f"{got / wall:.0f} req/s = {(got / wall) / ideal:.3f} of ideal), servers got "
                                           f"{got}, failed records {result.stats.get('failed', 0)}"))
                for i, st in enumerate(servers.stats()):
                    bl.info(f"P2 x{count} server {i + 1}: max_in_flight {st.get('max_in_flight')} (capacity {C}), "
                            f"max_queued {st.get('max_queued')}, oracle hits {st.get('oracle_hits')} "
                            f"misses {st.get('oracle_misses')}, bad requests {st.get('bad_requests')}")
            finally:
                servers.close()

        cores = len(os.sched_getaffinity(0))
        for (case, count), runs in results.items():
            ratios = sorted(r for r, _ in runs)
            med = bl.median(ratios)
            detail = min(runs, key=lambda r: abs(r[0] - med))[1]
            bl.info(f"P2 {case} x{count} / ideal C/L: {med:.3f} ({detail}; ideal {count * C / L:.0f} req/s; "
                    f"ratios {', '.join(f'{r:.3f}' for r in ratios)})")
        for (case, count), rows in cpu_log.items():
            client = bl.median([r[1] for r in rows])
            server = [bl.median([r[2][i] for r in rows]) for i in range(count)]
            busy = bl.median([r[3] for r in rows])
            hits = rows[-1][4]
            hit_text = ("; image prefix hits per server " + ", ".join(f"{h}/{h + m}" for h, m in hits)
                        + f" ({sum(h for h, _ in hits) / max(1, sum(h + m for h, m in hits)):.3f})") if hits else ""
            bl.info(f"P2 CPU {case} x{count}: client {client:.3f} ms/request, server(s) "
                    f"{', '.join(f'{x:.3f}' for x in server)} ms/request; all processes busy {busy:.2f} of "
                    f"{cores} cores{' (CPU-bound: the machine, not the client, is the limit)' if busy > 0.9 * cores else ''}"
                    f"{hit_text}")
        worst = None
        summary = []
        for count in server_counts:
            if ("engine", count) not in cpu_log or ("plain", count) not in cpu_log:
                continue
            engine_rate = bl.median([r[0] for r in cpu_log[("engine", count)]])
            plain_rate = bl.median([r[0] for r in cpu_log[("plain", count)]])
            ratio = engine_rate / plain_rate
            busy = max(bl.median([r[3] for r in cpu_log[(side, count)]]) for side in ("engine", "plain"))
            bound = f" (CPU-bound: {busy:.2f} of {cores} cores busy)" if busy > 0.9 * cores else ""
            summary.append(f"x{count}: engine {engine_rate:.0f} vs plain {plain_rate:.0f} req/s = {ratio:.3f}{bound}")
            if worst is None or ratio < worst[0]:
                worst = (ratio, count)
        if worst is not None:
            bl.figure(
                f"P2 saturation (http engine / plain aiohttp client, same bodies, serve-sim C={C}, "
                f"L={L * 1000:.0f} ms, api {args.api})",
                worst[0],
                f"worst x{worst[1]}; {'; '.join(summary)}; median of {reps} alternated reps; requests of "
                f"{pool_images} images {width}x{height} avg {size / available / 1024:.0f} KB; client and servers "
                f"share {cores} cores",
                f">= {GOAL}", worst[0] >= GOAL)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
