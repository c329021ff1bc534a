"""Scale: a build of 20k vs 1k images. Peak RSS 20k/1k (goal <= 1.2) and the time per 1,000 images
of the last shard / the first shard of the 20k build (goal <= 1.1): nothing may grow with the build.

Per-shard times are measured between consecutive shard commits (CPU of the whole process, and
wall). Each build runs in a fresh subprocess (so peaks do not mix), in-process `builder.run.build.Builder`,
strategy tagllm, simulated engine (latency 0), formats webdataset + hf, 1000 records per shard,
over generated 128x96 JPEGs with COCO-80 labels. The child reports its peak resident set
(VmHWM from /proc/self/status, else ru_maxrss), its RSS after imports (and whether torch got
imported).

    .venv/bin/python tests/benchmarks/bench_memory.py [--quick] [--small N] [--large N]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib as bl

GOAL = 1.2
SCALE_GOAL = 1.1
WIDTH, HEIGHT = 128, 96


def status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_mb() -> float:
    hwm = status_kb("VmHWM")
    if hwm is not None:
        return hwm / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def decoder_peak_mb() -> float:
    """Peak RSS of the build's decode worker processes (0 when the build decodes in threads)."""
    from builder.images import pool as decoding

    total = 0.0
    for pid in decoding._processes.pids() if decoding._processes is not None else []:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def child(folder: Path, limit: int, out: Path, per_shard: int) -> None:
    import builder.run.build  # the imports a build needs, before measuring the baseline

    core = (status_kb("VmRSS") or 0) / 1024
    import builder.publish.writers.webdataset  # noqa: F401

    after_wds = (status_kb("VmRSS") or 0) / 1024
    import builder.publish.writers.hf  # noqa: F401

    baseline = (status_kb("VmRSS") or 0) / 1024
    imports = {"core_mb": core, "webdataset_mb": after_wds - core, "hf_mb": baseline - after_wds,
               "torch_loaded": "torch" in sys.modules}
    marks: dict[str, float] = {}
    finalize = builder.run.build.finalize_output

    def timed_finalize(*args, **kwargs):  # the peak while tagging and writing shards, before totals + card
        marks["decoder_mb"] = decoder_peak_mb()
        marks["tagging_peak_mb"] = peak_mb() + marks["decoder_mb"]
        marks["finalize_start"] = time.perf_counter()
        try:
            return finalize(*args, **kwargs)
        finally:
            marks["finalize_seconds"] = time.perf_counter() - marks["finalize_start"]

    builder.run.build.finalize_output = timed_finalize
    # CPU seconds (whole process) and wall seconds between consecutive shard commits: with one window
    # across shards, that is the cost of the next 1,000 images whatever shard they belong to.
    import builder.run.shards

    marks_at: list[tuple[float, float]] = []
    commit = builder.run.shards.WriterSink.commit

    def marked_commit(self, *args, **kwargs):
        marks_at.append((bl.cpu_seconds(), time.perf_counter()))
        return commit(self, *args, **kwargs)

    builder.run.shards.WriterSink.commit = marked_commit
    data = bl.recipe_data(folder, out, limit=limit, output={"samples_per_shard": per_shard},
                          engine={"simulation": {"latency": 0.0}})
    started = time.perf_counter()
    marks_at.append((bl.cpu_seconds(), started))
    result = bl.build(data, out)
    seconds = time.perf_counter() - started
    shard_cpu = [b[0] - a[0] for a, b in zip(marks_at, marks_at[1:])]
    walls = [b[1] - a[1] for a, b in zip(marks_at, marks_at[1:])]
    decoders = max(marks.get("decoder_mb", 0.0), decoder_peak_mb())
    print(json.dumps({"peak_mb": peak_mb() + decoders, "decoder_mb": decoders, "baseline_mb": baseline, "seconds": seconds, "shard_walls": walls, "shard_cpu": shard_cpu,
                      "torch_after_build": "torch" in sys.modules,
                      "tagging_peak_mb": marks.get("tagging_peak_mb", 0.0), **imports,
                      "finalize_seconds": marks.get("finalize_seconds", 0.0),
                      "images": result.stats["images"], "ok": result.stats["ok"], "shards": result.shards}))


def measure(folder: Path, limit: int, per_shard: int) -> dict:
    out = bl.scratch(f"memory-{limit}")
    try:
        cmd = [sys.executable, __file__, "--child", str(folder), "--limit", str(limit), "--out", str(out / "o"),
               "--per-shard", str(per_shard)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=bl.python_env(), cwd=bl.REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 vs 1000 images, 100 per shard")
    parser.add_argument("--scale-goal", type=float, default=SCALE_GOAL)
    parser.add_argument("--small", type=int)
    parser.add_argument("--large", type=int)
    parser.add_argument("--per-shard", type=int)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.limit, args.out, args.per_shard)
        return
    small = args.small or (100 if args.quick else 1000)
    large = args.large or (1000 if args.quick else 20000)
    per_shard = args.per_shard or (100 if args.quick else 1000)
    folder = bl.photo_folder(large, WIDTH, HEIGHT)
    a = measure(folder, small, per_shard)
    b = measure(folder, large, per_shard)
    ratio = b["peak_mb"] / a["peak_mb"]
    bl.figure(
        f"MEM peak RSS (build of {large} / {small} images)", ratio,
        f"{b['peak_mb']:.0f} MB vs {a['peak_mb']:.0f} MB peak; after imports {b['baseline_mb']:.0f} / "
        f"{a['baseline_mb']:.0f} MB, so the build itself adds {b['peak_mb'] - b['baseline_mb']:.0f} / "
        f"{a['peak_mb'] - a['baseline_mb']:.0f} MB, of which the decode worker processes {b['decoder_mb']:.0f} / "
        f"{a['decoder_mb']:.0f} MB; {WIDTH}x{HEIGHT} JPEGs, {per_shard} per shard, tagllm, "
        f"simulated engine, webdataset+hf; fresh process each",
        f"<= {GOAL}", ratio <= GOAL)
    walls, cpus = b["shard_walls"], b["shard_cpu"]
    if large % per_shard:  # a short last shard is not comparable
        walls, cpus = walls[:-1], cpus[:-1]
    ratio = cpus[-1] / cpus[0]
    bl.figure(
        f"SCALE per-{per_shard}-image CPU time, last shard / first shard ({large}-image build)", ratio,
        f"shard 0 {cpus[0]:.2f} s, shard {len(cpus) - 1} {cpus[-1]:.2f} s CPU; wall last / first "
        f"{walls[-1] / walls[0]:.3f} (shard 0 {walls[0]:.2f} s, last {walls[-1]:.2f} s); overall {b['images'] / b['seconds']:.0f} img/s; "
        "CPU time of the whole process, which other processes on the machine disturb far less than wall time",
        f"<= {args.scale_goal}", ratio <= args.scale_goal)
    third = max(1, len(cpus) // 3)
    bl.info(f"SCALE CPU s per shard: {', '.join(f'{c:.1f}' for c in cpus)}; wall s: "
            f"{', '.join(f'{w:.1f}' for w in walls)}")
    bl.info(f"SCALE last third / first third of the shards: CPU {sum(cpus[-third:]) / sum(cpus[:third]):.3f}, wall "
            f"{sum(walls[-third:]) / sum(walls[:third]):.3f}")
    bl.info(f"MEM peak before finalize_output (tagging + shard writing): {b['tagging_peak_mb']:.0f} / "
            f"{a['tagging_peak_mb']:.0f} MB (ratio {b['tagging_peak_mb'] / a['tagging_peak_mb']:.3f}); finalize_output "
            f"(stats, cost, card) raises the peak by {b['peak_mb'] - b['tagging_peak_mb']:.0f} / "
            f"{a['peak_mb'] - a['tagging_peak_mb']:.0f} MB and takes {b['finalize_seconds']:.1f} / "
            f"{a['finalize_seconds']:.1f} s")
    bl.info(f"MEM RSS after imports {a['baseline_mb']:.0f} MB: builder.run.build {a['core_mb']:.0f} MB, then "
            f"builder.publish.writers.webdataset +{a['webdataset_mb']:.0f} MB (torch imported: {a['torch_loaded']}), "
            f"builder.publish.writers.hf +{a['hf_mb']:.0f} MB; torch imported after the whole build: "
            f"{b['torch_after_build']}")
    bl.info(f"MEM builds took {a['seconds']:.1f} s ({a['images'] / a['seconds']:.0f} img/s) and {b['seconds']:.1f} s "
            f"({b['images'] / b['seconds']:.0f} img/s); ok {a['ok']}/{a['images']}, {b['ok']}/{b['images']}; "
            f"shards {a['shards']}, {b['shards']}; throughput {large} vs {small}: "
            f"{(b['images'] / b['seconds']) / (a['images'] / a['seconds']):.2f}x (a streaming build keeps its rate)")


if __name__ == "__main__":
    main()
