"""Scale-out: Ray workers against `tagllm serve-sim`, and idle time at shard boundaries.

Two figures, each measured side by side in one run:

- scaling: `--runner ray` with 2 workers vs 1, each worker with its own serve-sim server (latency L,
  capacity C per server). images/s of the tagging phase (workers already started) with 2 workers
  divided by images/s with 1. Ideal 2.0; goal >= 1.8.
- boundaries: a single-process build through one serve-sim with small shards, walking shards the
  old way (drain the task window at every shard end) vs now (one window across shards). Reported:
  seconds with no request in flight, mean requests in flight, wall time; the figure is the idle
  time now / before (lower is better).

    .venv/bin/python tests/benchmarks/bench_scaling.py [--quick] [--reps R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import benchlib as bl
from bench_saturation import SimServers

GOAL = 1.8


class Occupancy:
    """Requests in flight over time, seen through an engine's `_generate_one` (time at zero = idle)."""

    def __init__(self) -> None:
        self.inflight = 0
        self.first = self.last = self.mark = 0.0
        self.idle = self.area = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.mark:
            span = now - self.mark
            self.area += span * self.inflight
            if self.inflight == 0:
                self.idle += span
        else:
            self.first = now
        self.mark = self.last = now

    def wrap(self, engine: Any) -> Any:
        inner = engine._generate_one

        async def counted(request: Any) -> Any:
            self._tick()
            self.inflight += 1
            try:
                return await inner(request)
            finally:
                self._tick()
                self.inflight -= 1

        engine._generate_one = counted
        return engine

    def summary(self) -> tuple[float, float, float]:
        """(idle seconds, mean in flight, seconds from first request to last answer)."""
        span = max(1e-9, self.last - self.first)
        return self.idle, self.area / span, span


def draining_builder(loaded: Any, out: Path, engine: Any) -> Any:
    """The walk as it was: each shard's window drains completely before the next shard starts."""
    from builder.run import tagging
    from builder.run.build import Builder
    from builder.run.walk import walk_shards

    async def draining(jobs, tag, window, open_sink):  # noqa: ANN001, ANN202
        committed = []
        for job in jobs:
            committed += await walk_shards([job], tag, window, open_sink)
        return committed

    class Draining(Builder):
        def run(self):  # noqa: ANN202
            tagging.walk_shards = draining
            try:
                return super().run()
            finally:
                tagging.walk_shards = walk_shards

    return Draining(loaded, out, engine=engine, overwrite=True, progress=False)


def boundaries(folder: Path, work: Path, images: int, latency: float, reps: int) -> None:
    from builder.engines.registry import engine_from_spec
    from builder.run.build import Builder

    C = 64
    servers = SimServers(bl.write_recipe(work / "sim.yaml", bl.recipe_data(folder, work / "u", limit=images)),
                         1, C, latency)
    try:
        data = bl.recipe_data(folder, work / "b", limit=images, output={"samples_per_shard": 8},
                              engine={"kind": "http", "servers": servers.urls, "api": "openai", "concurrency": C})
        runs: dict[str, list[tuple[float, float, float, float]]] = {"before": [], "now": []}

        def side(name: str):
            def go() -> None:
                loaded = bl.load(data)
                occ = Occupancy()
                engine = occ.wrap(engine_from_spec(loaded.recipe.engine, loaded.vocab))
                started = time.perf_counter()
                if name == "before":
                    draining_builder(loaded, work / name, engine).run()
                else:
                    Builder(loaded, work / name, engine=engine, overwrite=True, progress=False).run()
                runs[name].append((*occ.summary(), time.perf_counter() - started))
            return go

        bl.build(dict(data, source={**data["source"], "limit": 4}), work / "warm")
        bl.alternate({"before": side("before"), "now": side("now")}, reps)
    finally:
        servers.close()
    med = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
    for name, (idle, mean, span, wall) in med.items():
        bl.info(f"boundaries {name}: idle {idle:.2f} s, mean in flight {mean:.1f} of {C}, requests span {span:.2f} s, "
                f"wall {wall:.2f} s")
    ratio = med["now"][0] / max(1e-9, med["before"][0])
    bl.figure(f"S2 shard boundaries (serve-sim L={latency * 1000:.0f} ms, C={C}, {images} images, 8 per shard)", ratio,
              f"idle {med['now'][0]:.2f} s now vs {med['before'][0]:.2f} s draining at shard ends; mean in flight "
              f"{med['now'][1]:.1f} vs {med['before'][1]:.1f}; wall {med['now'][3]:.2f} vs {med['before'][3]:.2f} s; "
              f"median of {reps}", "< 0.5", ratio < 0.5)


def scaling(folder: Path, work: Path, images: int, capacity: int, latency: float, reps: int) -> None:
    import ray

    from builder.run.ray_runner import RayBuilder

    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    servers = SimServers(bl.write_recipe(work / "sim.yaml", bl.recipe_data(folder, work / "u", limit=images)),
                         2, capacity, latency)
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        def side(n: int):
            def go() -> None:
                data = bl.recipe_data(folder, work / f"x{n}", limit=images, output={"samples_per_shard": 10},
                                      engine={"kind": "http", "servers": servers.urls[:n], "api": "openai",
                                              "concurrency": 2 * capacity})
                builder = RayBuilder(bl.load(data), work / f"x{n}", workers=n, overwrite=True, progress=False)
                result = builder.run()
                assert result.stats["ok"] == images, result.stats
                rates[n].append(images / builder.timing["tagging"])
                bl.info(f"scaling x{n}: {images} images in {builder.timing['tagging']:.2f} s tagging "
                        f"(workers started in {builder.timing['workers_start']:.1f} s)")
            return go

        bl.alternate({"1": side(1), "2": side(2)}, reps)
    finally:
        servers.close()
        ray.shutdown()
    one, two = bl.median(rates[1]), bl.median(rates[2])
    ratio = two / one
    ideal = capacity / latency
    bl.figure(f"S1 scale-out (--runner ray, 2 workers vs 1, one serve-sim per worker, L={latency * 1000:.0f} ms, "
              f"C={capacity} per server)", ratio,
              f"{two:.2f} vs {one:.2f} images/s while tagging, {images} images, 10 per shard; server ideal "
              f"{ideal:.0f} req/s each; median of {reps}; everything shares {len(os.sched_getaffinity(0))} cores",
              f">= {GOAL}", ratio >= GOAL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    parser.add_argument("--reps", type=int, help="repetitions of each side (default 3; quick 1)")
    parser.add_argument("--only", choices=["scaling", "boundaries"])
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    folder = bl.photo_folder(200, 320, 240)
    work = bl.scratch("scaling")
    try:
        if args.only != "boundaries":
            try:
                import ray  # noqa: F401
            except ImportError:
                bl.info("scaling: skipped, Ray is not installed (pip install 'tagllm[ray]')")
            else:
                scaling(folder, work, 40 if args.quick else 60, 8, 0.2, reps)
        if args.only != "scaling":
            boundaries(folder, work, 40 if args.quick else 120, 0.1, reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
