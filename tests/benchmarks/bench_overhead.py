"""P1 overhead: `tagllm build` with an instant simulated engine vs a plain WebDataset copy.

Side A: an in-process `builder.run.build.Builder` build (strategy tagllm, simulated engine with latency 0,
formats webdataset + hf, progress off) over a folder of generated 640x480 JPEGs (~70 KB each)
with COCO-80 labels in metadata.jsonl.
Side A' (extra): the same build writing webdataset only.
Side B: read each file and write `{key}.jpg` + a tiny `{key}.json` with `webdataset.TarWriter`.

The sides alternate (A, A', B, then reversed), several reps each; the figure is the median
throughput ratio A/B (images/s). Goal >= 0.5. A cProfile of one more A run (on a slice of the
images) gives the breakdown printed on `#` lines.

    .venv/bin/python tests/benchmarks/bench_overhead.py [--quick] [--images N] [--reps R]
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

import benchlib as bl

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


def profile_build(data: dict, out: Path, images: int) -> list[str]:
    """Breakdown of one A run: cProfile of the event-loop thread + wall time of prepare_image in threads."""
    import builder.method.base as tagger_base
    from builder.run.build import Builder

    original = tagger_base.prepare_image
    prep = {"seconds": 0.0, "calls": 0}
    lock = threading.Lock()

    def timed_prepare(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                prep["seconds"] += time.perf_counter() - started
                prep["calls"] += 1

    started = time.perf_counter()
    loaded = bl.load(data)
    load_seconds = time.perf_counter() - started
    tagger_base.prepare_image = timed_prepare
    profiler = cProfile.Profile()
    try:
        started = time.perf_counter()
        profiler.enable()
        Builder(loaded, out, overwrite=True, progress=False).run()
        profiler.disable()
        wall = time.perf_counter() - started
    finally:
        tagger_base.prepare_image = original
    table = pstats.Stats(profiler).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)

    def cum(*names: tuple[str, str]) -> float:
        """Cumulative seconds of functions given as (file suffix, function name)."""
        total = 0.0
        for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in table.items():
            for suffix, name in names:
                if func == name and file.replace("\\", "/").endswith(suffix):
                    total += ct
        return total

    total = cum(("run/build.py", "run"))
    setup = cum(("run/build.py", "check"), ("run/build.py", "save_recipe"))
    final = cum(("run/build.py", "finalize_output"))
    loop = {  # parts of the per-image work; none of them calls another
        "simulated engine answering (SimulatedEngine._generate_one)": cum(("engines/simulated.py", "_generate_one")),
        "request cache (request_key + RequestCache.get/put)": cum(("run/cache.py", "request_key"),
                                                                 ("run/cache.py", "get"),
                                                                 ("run/cache.py", "put")),
        "writers (Writer.write/begin_shard/end_shard/finalize)": cum(("writers/base.py", "write"),
                                                                    ("writers/base.py", "begin_shard"),
                                                                    ("writers/hf.py", "begin_shard"),
                                                                    ("writers/base.py", "end_shard"),
                                                                    ("writers/hf.py", "finalize")),
        "source reading (FolderSource._item)": cum(("sources/folder.py", "_item")),
    }
    rest = total - setup - final - sum(loop.values())
    lines = [f"P1 breakdown: cProfile of one build of {images} images (event-loop thread), {wall:.2f} s under the "
             f"profiler ({images / wall:.0f} img/s); recipe load before it {load_seconds:.2f} s",
             f"  {setup:6.2f} s {100 * setup / total:5.1f}%  setup (Builder.check: source listing, engine, templates; "
             "save_recipe)"]
    for name, seconds in loop.items():
        lines.append(f"  {seconds:6.2f} s {100 * seconds / total:5.1f}%  {name}")
    lines.append(f"  {rest:6.2f} s {100 * rest / total:5.1f}%  the rest of the per-image loop: strategy + asker "
                 "(build requests, parse, gather), engine base loop (semaphore, wait_for), asyncio scheduling")
    lines.append(f"  {final:6.2f} s {100 * final / total:5.1f}%  finalize_output (stats merge, cost, card)")
    lines.append(f"  image preparation (builder.images.prepare_image, run in asyncio.to_thread workers, overlapping "
                 f"the loop thread): {prep['seconds']:.2f} s over {prep['calls']} images = "
                 f"{1000 * prep['seconds'] / max(1, prep['calls']):.2f} ms/image")
    lines.append("  top functions by own time (event-loop thread):")
    rows = sorted(table.items(), key=lambda kv: -kv[1][2])[:12]
    for (file, line, func), (_cc, nc, tt, ct, _callers) in rows:
        where = file.split("site-packages/")[-1].replace(str(bl.REPO) + "/", "")
        lines.append(f"  {tt:6.2f} s own {ct:6.2f} s cum {nc:8d} calls  {where}:{line}({func})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    parser.add_argument("--images", type=int, help="images per run (default 2000; quick 120)")
    parser.add_argument("--reps", type=int, help="repetitions of each side (default 3)")
    parser.add_argument("--profile-images", type=int, help="images in the profiled run (default 500; quick 60)")
    args = parser.parse_args()
    n = args.images or (120 if args.quick else 2000)
    reps = args.reps or 3
    n_prof = min(n, args.profile_images or (60 if args.quick else 500))
    width, height = (320, 240) if args.quick else (640, 480)

    folder = bl.photo_folder(n, width, height)
    count, size = bl.folder_bytes(folder)
    work = bl.scratch("overhead")
    try:
        full = bl.recipe_data(folder, work / "a", engine={"simulation": {"latency": 0.0}}, limit=n)
        wds_only = bl.recipe_data(folder, work / "a", engine={"simulation": {"latency": 0.0}}, limit=n,
                                  output={"formats": ["webdataset"]})
        # warm up: imports, page cache of the images, first-call costs of every side
        bl.build(bl.recipe_data(folder, work / "a", limit=10), work / "a")
        tar_copy(folder, work / "b", n)
        sides = {
            "A": lambda: bl.build(full, work / "a"),
            "A-wds": lambda: bl.build(wds_only, work / "a"),
            "B": lambda: tar_copy(folder, work / "b", n),
        }
        times = bl.alternate(sides, reps)
        a, a_wds, b = (bl.median(times[k]) for k in ("A", "A-wds", "B"))
        ratio = (n / a) / (n / b)
        bl.figure(
            "P1 overhead (tagllm build, instant simulated engine, webdataset+hf / plain TarWriter copy)",
            ratio,
            f"build {n / a:.1f} img/s vs copy {n / b:.1f} img/s; {n} JPEGs {width}x{height} "
            f"avg {size / count / 1024:.0f} KB; median of {reps} alternated reps: build {bl.fmt_times(times['A'])}, "
            f"copy {bl.fmt_times(times['B'])}",
            f">= {GOAL}", ratio >= GOAL)
        ratio_wds = (n / a_wds) / (n / b)
        bl.info(f"P1 webdataset only: ratio {ratio_wds:.3f} (build {n / a_wds:.1f} img/s vs copy {n / b:.1f} img/s; "
                f"build {bl.fmt_times(times['A-wds'])}) goal >= {GOAL} {'PASS' if ratio_wds >= GOAL else 'MISS'}")
        bl.info(f"P1 requests/image in the build: tagllm on COCO-80 ~{_requests_per_image(work / 'a'):.1f} "
                "(each answered by the simulated engine, each cached in sqlite)")
        prof = bl.recipe_data(folder, work / "p", engine={"simulation": {"latency": 0.0}}, limit=n_prof)
        bl.info("\n".join(profile_build(prof, work / "p", n_prof)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _requests_per_image(out: Path) -> float:
    try:
        stats = json.loads((out / "stats.json").read_text())
        return float(stats["cost"]["requests_per_image"])
    except (OSError, KeyError, ValueError, TypeError):
        return float("nan")


if __name__ == "__main__":
    main()
