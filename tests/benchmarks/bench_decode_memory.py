"""Peak memory of decoding large images: the pixel budget against an unbounded pool.

Each side runs in a fresh subprocess that prepares the same large PNGs concurrently through a
`DecodePool` with 8 decode threads (a many-core machine's pool) and reports its peak RSS above
the baseline after imports. Side A holds at most `output.decode_pixel_budget` pixels at once (the
budget the recipe sets); side B has no budget (every thread decodes at once, as a pool sized by
the core count would). Printed as a detail line (no goal): peak RSS of each side and their ratio.

    .venv/bin/python tests/benchmarks/bench_decode_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib as bl  # noqa: E402

WORKERS = 8


def make_pngs(folder: Path, n: int, side: int) -> list[Path]:
    """Smooth large PNGs (small on disk, `side`^2 pixels decoded)."""
    from PIL import Image

    paths = []
    for i in range(n):
        path = folder / f"large{i}.png"
        img = Image.linear_gradient("L").resize((side, side)).convert("RGB")
        img.putpixel((i, i), (255, 0, 0))  # distinct images
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def child(paths: list[Path], budget: int) -> None:
    from builder.images.pool import DecodePool

    datas = [p.read_bytes() for p in paths]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pool = DecodePool(workers=WORKERS, pixel_budget=budget)

    async def go() -> None:
        await asyncio.gather(*(pool.prepare(d, 1_000_000, 10**9) for d in datas))

    asyncio.run(go())
    pool.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"above_baseline_mb": (peak - base) / 1024, "held_peak": pool.budget.peak}))


def measure(paths: list[Path], budget: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(budget), *map(str, paths)],
                         capture_output=True, text=True, check=True, env=bl.python_env())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", type=int)
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args()
    if args.child is not None:
        child([Path(p) for p in args.paths], args.child)
        return
    from builder.images.pool import DEFAULT_PIXEL_BUDGET

    n, side = (8, 2500) if args.quick else (8, 5000)
    work = bl.scratch("decode-memory")
    try:
        paths = make_pngs(work, n, side)
        budget = DEFAULT_PIXEL_BUDGET // 4 if args.quick else DEFAULT_PIXEL_BUDGET
        a, b = measure(paths, budget), measure(paths, 10**12)
        ratio = a["above_baseline_mb"] / b["above_baseline_mb"] if b["above_baseline_mb"] > 0 else float("nan")
        bl.info(f"MEM-LARGE peak RSS decoding {n} PNGs of {side}x{side} with {WORKERS} decode threads: pixel budget "
                f"{budget / 1e6:.0f} MP {a['above_baseline_mb']:.0f} MB vs no budget {b['above_baseline_mb']:.0f} MB "
                f"above the baseline (ratio {ratio:.3f}); most pixels held at once {a['held_peak'] / 1e6:.0f} MP vs "
                f"{b['held_peak'] / 1e6:.0f} MP")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
