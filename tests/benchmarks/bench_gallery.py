"""The gallery's cost: build time and size at 2,000 real images, and at 100,000 generated records.

    .venv/bin/python tests/benchmarks/bench_gallery.py [--images 2000] [--synthetic 100000]

Part 1 builds 2,000 generated 640x480 JPEGs (the P1 photos) with the simulated engine, then times
`write_gallery` from nothing (thumbnails made) and again (thumbnails kept, as after `relabel`).
Part 2 writes 100,000 synthetic records straight into index shards (no build, no images: the
labels, scores, human labels and failures are drawn from a seeded generator) and times the
gallery's pages alone in a child process, with its peak memory; thumbnails at that size are
extrapolated from part 1's per-image cost. The first screen (what a browser reads before the
first tiles show) is printed for both; `FIRST-SCREEN` is its ratio, 100,000 over 2,000.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib as bl

from builder.publish import layout
from builder.publish.gallery import GALLERY, write_gallery
from builder.records import Record


def part_real(n: int) -> tuple[Path, dict]:
    folder = bl.photo_folder(n)
    out = bl.scratch("gallery") / "out"
    t0 = time.perf_counter()
    bl.build(bl.recipe_data(folder, out, output={"samples_per_shard": 1000}), out)
    build_s = time.perf_counter() - t0
    shutil.rmtree(out / GALLERY)
    cpu0 = time.process_time()  # this process, all its threads (the thumbnails are made in threads)
    fresh = write_gallery(out)
    cpu1 = time.process_time()
    kept = write_gallery(out)
    cpu2 = time.process_time()
    images, source_bytes = bl.folder_bytes(folder)
    per = fresh["thumbnail_bytes"] / max(1, fresh["thumbnails"])
    bl.info(f"{n} images ({source_bytes / 1e6:.0f} MB of JPEGs): build with gallery {build_s:.1f} s; "
            f"gallery from nothing {fresh['seconds']:.2f} s, {cpu1 - cpu0:.2f} s CPU (thumbnails "
            f"{fresh['thumbnail_seconds']:.2f} s of it, {fresh['thumbnails_made']} made), again {kept['seconds']:.2f} s, "
            f"{cpu2 - cpu1:.2f} s CPU ({kept['thumbnails_made']} made, {kept['thumbnails_kept']} kept)")
    bl.info(f"{n} images: gallery {fresh['bytes'] / 1e6:.1f} MB = {fresh['bytes'] / source_bytes:.3f}x the "
            f"source; thumbnails {fresh['thumbnail_bytes'] / 1e6:.1f} MB ({per / 1024:.1f} KB each); "
            f"{fresh['page_files']} page files in {fresh['views']} views; first screen "
            f"{fresh['first_screen_bytes'] / 1024:.0f} KB; contact sheet {fresh['contact_sheet']['bytes'] / 1024:.0f} KB")
    return out, fresh


def synthetic_output(template: Path, n: int, per_shard: int = 1000, seed: int = 0) -> Path:
    """An output folder of `n` generated records in index shards, with `template`'s recipe and manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = template.parent / "synthetic"  # beside the template: its recipe's relative paths still resolve
    (out / layout.INDEX_DIR).mkdir(parents=True)
    for name in (layout.RECIPE, layout.MANIFEST, layout.CONCEPTS):
        if (template / name).is_file():
            shutil.copyfile(template / name, out / name)
    names = bl.vocab_names()
    rng = random.Random(seed)
    reasons = ("decode", "engine", "parse", "missing")
    for shard in range(-(-n // per_shard)):
        rows = []
        for i in range(shard * per_shard, min(n, (shard + 1) * per_shard)):
            key = f"img{i:07d}"
            if rng.random() < 0.02:
                r = Record(key, "failed", error=rng.choice(reasons), detail="generated failure")
            else:
                human = rng.sample(names, rng.choice((1, 2, 2, 3, 3, 4)))
                candidates = sorted(set(human[:rng.randint(0, len(human))]) | set(rng.sample(names, rng.randint(0, 3))),
                                    key=names.index)
                scores = {c: round(rng.betavariate(4, 1.5) if c in human else rng.betavariate(1.5, 4), 4)
                          for c in candidates}
                r = Record(key, "ok", labels=[c for c in candidates if scores[c] >= 0.5], scores=scores,
                           candidates=candidates, reference=[x for x in names if x in human], ext="jpg",
                           width=640, height=480, simulated=True)
            rows.append(layout.record_row(r, shard))
        pq.write_table(pa.Table.from_pylist(rows), layout.index_path(out, shard))
        layout.shard_stats_path(out, shard).write_text(json.dumps({"images": len(rows)}))
    return out


def part_synthetic(template: Path, n: int, per_thumb: float, thumb_s_per_image: float) -> dict:
    out = synthetic_output(template, n)
    code = ("import json, sys; from builder.publish.gallery import write_gallery; "
            "print(json.dumps(write_gallery(sys.argv[1], thumbnails=False)))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=bl.python_env(),
                          check=True)
    wall = time.perf_counter() - t0
    peak_mb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    s = json.loads(done.stdout.strip().splitlines()[-1])
    first_page = (out / GALLERY / "data" / "all" / "page-00000.js").stat().st_size
    meta = (out / GALLERY / "data" / "meta.js").stat().st_size
    bl.info(f"{n} generated records: gallery pages {s['seconds']:.1f} s ({wall:.1f} s with the process start), "
            f"peak RSS {peak_mb:.0f} MB; {s['bytes'] / 1e6:.0f} MB in {s['page_files']} page files, "
            f"{s['views']} views, {s['label_pages']} label pages")
    bl.info(f"{n} generated records: first screen {s['first_screen_bytes'] / 1024:.0f} KB (meta.js {meta / 1024:.0f} KB,"
            f" first page {first_page / 1024:.0f} KB); thumbnails at part 1's cost would add "
            f"{n * per_thumb / 1e9:.2f} GB and {n * thumb_s_per_image / 60:.1f} min once")
    shutil.rmtree(out, ignore_errors=True)
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--synthetic", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="200 images, 10,000 records")
    args = parser.parse_args()
    if args.quick:
        args.images, args.synthetic = 200, 10_000
    out, real = part_real(args.images)
    per_thumb = real["thumbnail_bytes"] / max(1, real["thumbnails"])
    synth = part_synthetic(out, args.synthetic, per_thumb, real["thumbnail_seconds"] / max(1, real["thumbnails_made"]))
    ratio = synth["first_screen_bytes"] / real["first_screen_bytes"]
    bl.figure("FIRST-SCREEN", ratio,
                    f"{synth['first_screen_bytes'] / 1024:.0f} KB at {args.synthetic} vs "
              f"{real['first_screen_bytes'] / 1024:.0f} KB at {args.images}", "<= 1.2", ratio <= 1.2)
    shutil.rmtree(out.parent, ignore_errors=True)
    print(bl.machine())


if __name__ == "__main__":
    main()
