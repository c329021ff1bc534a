"""P1 overhead: `tagllm build` with an instant simulated engine vs a hand-written peer.

Side build: an in-process `builder.run.build.Builder` build (strategy tagllm, simulated engine with
latency 0, formats webdataset + hf, progress off) over a folder of generated 640x480 JPEGs (~70 KB
each) with COCO-80 labels in metadata.jsonl.
Side peer (`peer.py`): the same requests to the same instant engine, written to one tar: no cache,
no index, no HF dataset, no card.
Extra sides: the build writing webdataset only; a plain copy of the bytes into a tar.

The sides alternate (then reversed), several reps each; the figure is the median throughput ratio
build/peer (images/s), with the CPU-time ratio beside it. Goal >= 0.5. A cProfile of one more
build gives ms per image per stage; a DISK line says what the outputs cost next to the sources.

    .venv/bin/python tests/benchmarks/bench_overhead.py [--quick] [--images N] [--reps R] [--profile-only]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import benchlib as bl
from peer import run_peer

from builder.engines.references import source_references

GOAL = 0.5


def tar_copy(folder: Path, out: Path, limit: int) -> int:
    """Side B: the plainest WebDataset writer of the same images (bytes + a tiny label json)."""
    import webdataset as wds

    labels: dict[str, list[str]] = {}
    with open(folder / "metadata.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            labels[row["file_name"]] = row["labels"]
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(folder.glob("*.jpg"))[:limit]
    with open(out / "copy-00000.tar", "wb") as stream, wds.TarWriter(stream) as tar:
        for path in files:
            tar.write({"__key__": path.stem, "jpg": path.read_bytes(),
                       "json": {"labels": labels.get(path.name, [])}})
    return len(files)


def _timed_prepare(records: dict[str, float]) -> tuple[Any, Any]:
    """Wrap image preparation wherever this version of the builder calls it; returns (install, undo)."""
    lock = threading.Lock()

    def timing(fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    records["seconds"] += time.perf_counter() - started
                    records["cpu"] += time.thread_time() - cpu
                    records["calls"] += 1
        return timed

    import builder.method.base as base

    if hasattr(base, "decode_pool"):  # the decode pool (bounded threads + pixel budget)
        from builder.images.pool import DecodePool

        original = DecodePool.prepare_now
        return (lambda: setattr(DecodePool, "prepare_now", timing(original)),
                lambda: setattr(DecodePool, "prepare_now", original))
    original = base.prepare_image  # older builders: asyncio.to_thread(prepare_image)
    return (lambda: setattr(base, "prepare_image", timing(original)),
            lambda: setattr(base, "prepare_image", original))


STAGES = {  # stage -> (file suffix, function) whose cumulative time it is; none of them calls another
    "source reading": [("sources/folder.py", "_item")],
    "request building (templates, Request objects)": [("method/candidates.py", "group_requests"),
                                                      ("method/verify.py", "verify_request")],
    "request cache (keys, get, put, commit)": [("ask/cache.py", "question_digest"), ("ask/cache.py", "row_key"),
                                               ("ask/cache.py", "get"), ("ask/cache.py", "put"),
                                               ("ask/cache.py", "commit")],
    "engine answering (SimulatedEngine._generate_one)": [("engines/simulated.py", "_generate_one")],
    "answer parsing": [("method/candidates.py", "parse_subset_answer"), ("method/verify.py", "parse_score")],
    "writers (tar, parquet, index)": [("writers/base.py", "write"), ("writers/base.py", "begin_shard"),
                                      ("writers/hf.py", "begin_shard"), ("writers/base.py", "end_shard"),
                                      ("writers/hf.py", "finalize")],
}


def profile_build(data: dict, out: Path, images: int) -> list[str]:
    """ms per image per stage: cProfile of the event-loop thread + wall time of image preparation in its threads."""
    from builder.run.build import Builder

    prep = {"seconds": 0.0, "cpu": 0.0, "calls": 0}
    install, undo = _timed_prepare(prep)
    started = time.perf_counter()
    loaded = bl.load(data)
    load_seconds = time.perf_counter() - started
    engine = bl.sim_engine(data, source_references(loaded))  # its label table is made outside the profile
    install()
    children_cpu = bl.children_cpu()
    profiler = cProfile.Profile()
    try:
        started = time.perf_counter()
        profiler.enable()
        Builder(loaded, out, engine=engine, overwrite=True, progress=False).run()
        profiler.disable()
        wall = time.perf_counter() - started
    finally:
        undo()
    table = pstats.Stats(profiler).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)

    def cum(names: list[tuple[str, str]]) -> float:
        total = 0.0
        for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in table.items():
            if any(func == name and file.replace("\\", "/").endswith(suffix) for suffix, name in names):
                total += ct
        return total

    total = cum([("run/build.py", "run")])
    setup = cum([("run/build.py", "check"), ("run/build.py", "save_recipe")])
    final = cum([("run/build.py", "finalize_output")])
    parts = {name: cum(names) for name, names in STAGES.items()}
    rest = total - setup - final - sum(parts.values())
    ms = 1000 / images
    lines = [f"P1 profile: one build of {images} images under cProfile (event-loop thread), {wall:.2f} s "
             f"({images / wall:.0f} img/s, {ms * wall:.2f} ms/image); recipe load before it {load_seconds:.2f} s",
             f"  {ms * setup:6.2f} ms/image {100 * setup / total:5.1f}%  setup (Builder.check, save_recipe)"]
    for name, seconds in parts.items():
        lines.append(f"  {ms * seconds:6.2f} ms/image {100 * seconds / total:5.1f}%  {name}")
    lines.append(f"  {ms * rest:6.2f} ms/image {100 * rest / total:5.1f}%  the rest of the loop: strategy + asker, "
                 "engine base loop (semaphore, timeout, gather), asyncio scheduling, waiting for decodes")
    lines.append(f"  {ms * final:6.2f} ms/image {100 * final / total:5.1f}%  finalize_output (stats merge, cost, card)")
    calls = max(1, prep["calls"])
    if prep["calls"]:
        lines.append(f"  image preparation in decode threads (beside the loop): {1000 * prep['cpu'] / calls:.2f} ms/image "
                     f"CPU, {1000 * prep['seconds'] / calls:.2f} ms/image wall over {prep['calls']} images")
    else:
        lines.append(f"  image preparation in the decode worker processes (beside the loop): "
                     f"{1000 * (bl.children_cpu() - children_cpu) / images:.2f} ms/image CPU")
    lines.append("  top functions by own time (event-loop thread):")
    rows = sorted(table.items(), key=lambda kv: -kv[1][2])[:10]
    for (file, line, func), (_cc, nc, tt, ct, _callers) in rows:
        where = file.split("site-packages/")[-1].replace(str(bl.REPO) + "/", "")
        lines.append(f"  {ms * tt:6.2f} ms/image own {ms * ct:6.2f} cum {nc:8d} calls  {where}:{line}({func})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    parser.add_argument("--images", type=int, help="images per run (default 2000; quick 120)")
    parser.add_argument("--reps", type=int, help="repetitions of each side (default 3)")
    parser.add_argument("--profile-images", type=int, help="images in the profiled run (default 1000; quick 60)")
    parser.add_argument("--profile-only", action="store_true", help="only the profile (for before/after runs)")
    args = parser.parse_args()
    n = args.images or (120 if args.quick else 2000)
    reps = args.reps or 3
    n_prof = min(n, args.profile_images if args.profile_images is not None else (60 if args.quick else 1000))
    width, height = (320, 240) if args.quick else (640, 480)

    folder = bl.photo_folder(n, width, height)
    count, size = bl.folder_bytes(folder)
    work = bl.scratch("overhead")
    try:
        instant = {"simulation": {"latency": 0.0}}
        # warm up: imports, page cache of the images, first-call costs of every side
        bl.build(bl.recipe_data(folder, work / "a", limit=10), work / "a")
        if args.profile_only:
            prof = bl.recipe_data(folder, work / "p", engine=instant, limit=n_prof)
            bl.info("\n".join(profile_build(prof, work / "p", n_prof)))
            return
        full = bl.recipe_data(folder, work / "a", engine=instant, limit=n)
        wds_only = bl.recipe_data(folder, work / "w", engine=instant, limit=n, output={"formats": ["webdataset"]})
        hf_only = bl.recipe_data(folder, work / "h", engine=instant, limit=n, output={"formats": ["hf"]})
        peer_loaded = bl.load(full)
        table = source_references(peer_loaded)  # the simulated engine's labels, made outside the timing
        tar_copy(folder, work / "b", n)
        run_peer(peer_loaded, folder, work / "peer", 10)
        sides = {
            "build": lambda: bl.build(full, work / "a", bl.sim_engine(full, table)),
            "peer": lambda: run_peer(peer_loaded, folder, work / "peer", n),
            "build-wds": lambda: bl.build(wds_only, work / "w", bl.sim_engine(wds_only, table)),
            "copy": lambda: tar_copy(folder, work / "b", n),
        }
        cpu: dict[str, list[float]] = {}
        times = bl.alternate(sides, reps, cpu=cpu)
        med = {k: bl.median(v) for k, v in times.items()}
        cpu_med = {k: bl.median(v) for k, v in cpu.items()}
        rate = {k: n / v for k, v in med.items()}
        ratio = rate["build"] / rate["peer"]
        cpu_ratio = cpu_med["peer"] / cpu_med["build"]
        bl.figure(
            "P1 overhead (tagllm build / hand-written peer, same requests to the same instant simulated engine)",
            ratio,
            f"build {rate['build']:.0f} img/s vs peer {rate['peer']:.0f} img/s; CPU-time ratio {cpu_ratio:.3f} "
            f"(CPU {1000 * cpu_med['build'] / n:.2f} vs {1000 * cpu_med['peer'] / n:.2f} ms/image); {n} JPEGs "
            f"{width}x{height} avg {size / count / 1024:.0f} KB; webdataset+hf, cache, index, card vs one tar; "
            f"median of {reps} alternated reps: build {bl.fmt_times(times['build'])}, peer {bl.fmt_times(times['peer'])}",
            f">= {GOAL}", ratio >= GOAL)
        bl.info(f"P1 build webdataset only / peer: {rate['build-wds'] / rate['peer']:.3f} ({rate['build-wds']:.0f} img/s; "
                f"CPU {1000 * cpu_med['build-wds'] / n:.2f} ms/image; {bl.fmt_times(times['build-wds'])})")
        bl.info(f"P1 build / plain TarWriter-style copy (information): {rate['build'] / rate['copy']:.3f} "
                f"(copy {rate['copy']:.0f} img/s, {bl.fmt_times(times['copy'])}: reads and writes the bytes, nothing else)")
        bl.info(f"P1 requests/image in the build: tagllm on COCO-80 ~{_requests_per_image(work / 'a'):.1f} "
                "(each answered by the simulated engine, each cached in sqlite)")
        bl.build(hf_only, work / "h")
        bl.info(disk_line(work, size))
        if n_prof:
            prof = bl.recipe_data(folder, work / "p", engine=instant, limit=n_prof)
            bl.info("\n".join(profile_build(prof, work / "p", n_prof)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def disk_line(work: Path, source: int) -> str:
    """What storing both formats costs on disk, measured on the builds just made."""
    wds_b = bl.tree_bytes(work / "a" / "webdataset")
    hf_b = bl.tree_bytes(work / "a" / "data")
    rest = bl.tree_bytes(work / "a") - wds_b - hf_b
    only_wds = bl.tree_bytes(work / "w")
    only_hf = bl.tree_bytes(work / "h")
    both = bl.tree_bytes(work / "a")
    return (f"DISK output / source images ({source / 1e6:.0f} MB of JPEGs): webdataset+hf {both / source:.2f}x "
            f"(tars {wds_b / source:.2f}x, parquet {hf_b / source:.2f}x, index+cache+card {rest / source:.2f}x); "
            f"webdataset only {only_wds / source:.2f}x; hf only {only_hf / source:.2f}x; storing both = "
            f"{both / only_wds:.2f}x the disk of webdataset only")


def _requests_per_image(out: Path) -> float:
    try:
        stats = json.loads((out / "stats.json").read_text())
        return float(stats["cost"]["requests_per_image"])
    except (OSError, KeyError, ValueError, TypeError):
        return float("nan")


if __name__ == "__main__":
    main()
