"""P2 saturation: the http engine against `tagllm serve-sim` (capacity C, latency L) -> req/s / (C/L).

Each serve-sim runs in its own process (`python -m builder serve-sim RECIPE --latency L --capacity C`),
so client and server do not share one GIL; they do share the machine's cores (2 on the dev box),
which the figure includes. Measured, for one server and for two (ideal 2C/L):

- engine: `HttpEngine.generate` on N prepared requests (the stage-1 group questions and the
  stage-2 checks of real images, as a tagllm build sends them), client concurrency 2C per server;
- build: a full in-process `tagllm build` through the http engine (openai API, strategy tagllm),
  engine.concurrency 2C per server.

Rates count requests from the first one sent to the last answer (the window); a build's whole wall
time (start, probes, finalize, card) is shown beside it. Goal: >= 0.95 of C/L in every case.

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

GOAL = 0.95


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
                    "--latency", str(latency), "--capacity", str(capacity)]
            proc = subprocess.Popen(cmd, cwd=bl.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.procs.append(proc)
            self.urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(self.urls, self.procs):
            bl.wait_ready(url, proc, timeout=300)

    def generation_requests(self) -> int:
        return sum(int(bl.get_json(u + "/stats").get("generation_requests", 0)) for u in self.urls)

    def stats(self) -> list[dict]:
        return [bl.get_json(u + "/stats") for u in self.urls]

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
    from builder.engines.http import HttpEngine

    async def go() -> tuple[Window, int]:
        engine = HttpEngine(servers=urls, api=api, concurrency=concurrency, vocab=vocab, timeout=60.0)
        window = Window()
        window.wrap(engine)
        await engine.start()
        try:
            results = await engine.generate(requests)
        finally:
            await engine.close()
        return window, sum(1 for r in results if not r.ok)

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
                    for _ in range(reps):
                        before = servers.generation_requests()
                        window, errors = run_engine(servers.urls, args.api, requests, concurrency, loaded.vocab)
                        got = servers.generation_requests() - before
                        rate = len(requests) / window.seconds
                        results.setdefault(("engine", count), []).append(
                            (rate / ideal, f"{len(requests)} requests in {window.seconds:.2f} s = {rate:.0f} req/s, "
                                           f"concurrency {concurrency}, servers got {got}, errors {errors}"))
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

        worst = None
        for (case, count), runs in results.items():
            ratios = sorted(r for r, _ in runs)
            med = bl.median(ratios)
            detail = min(runs, key=lambda r: abs(r[0] - med))[1]
            ideal = count * C / L
            line = (f"P2 {case} x{count} server{'s' if count > 1 else ''}: ratio {med:.3f} ({detail}; ideal "
                    f"{ideal:.0f} req/s; ratios {', '.join(f'{r:.3f}' for r in ratios)}) goal >= {GOAL} "
                    f"{'PASS' if med >= GOAL else 'MISS'}")
            bl.info(line)
            if worst is None or med < worst[0]:
                worst = (med, case, count)
        summary = ", ".join(f"{case} x{count} {bl.median([r for r, _ in runs]):.3f}"
                            for (case, count), runs in results.items())
        assert worst is not None
        bl.figure(
            f"P2 saturation (http engine vs serve-sim, C={C}, L={L * 1000:.0f} ms, api {args.api})",
            worst[0],
            f"worst case {worst[1]} x{worst[2]}; all: {summary}; req/s / (servers*C/L), median of {reps}; "
            f"requests of {pool_images} images {width}x{height} avg {size / available / 1024:.0f} KB; client and "
            f"servers share "
            f"{len(os.sched_getaffinity(0))} cores",
            f">= {GOAL}", worst[0] >= GOAL)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
