"""STORE: a build reading from and writing to a local S3 server vs the same build on local disk.

Side disk: folder source on local disk -> output folder on local disk.
Side s3: the same images uploaded to a bucket of moto's S3 server (its own process on 127.0.0.1,
reached through AWS_ENDPOINT_URL as s3fs reads it) -> `--out s3://bucket/out`.
Both use the instant simulated engine with one reference table made beforehand, formats webdataset
+ hf, progress off, overwrite each rep; the sides alternate (ABBA). The figure is the median
throughput ratio s3/disk (images/s). Goal >= 0.8: the store must not be what a build waits on.

    .venv/bin/python tests/benchmarks/bench_object_store.py [--quick] [--images N] [--reps R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import benchlib as bl

from builder.engines.references import source_references

GOAL = 0.8
KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def start_server() -> tuple[subprocess.Popen, str]:
    """moto's standalone server as a process of its own (in this process it would share the GIL with the build)."""
    port = bl.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's S3 server did not start on {url}") from None
            time.sleep(0.2)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int)
    parser.add_argument("--reps", type=int)
    args = parser.parse_args()
    n = args.images or (150 if args.quick else 1000)
    reps = args.reps or (2 if args.quick else 4)
    folder = bl.photo_folder(n)
    proc, endpoint = start_server()
    os.environ.update(KEYS, AWS_ENDPOINT_URL=endpoint)
    try:
        import fsspec

        fs = fsspec.filesystem("s3")
        fs.mkdir("tagllm-bench")
        fs.put([str(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")],
               "tagllm-bench/photos/")
        scratch = bl.scratch("object-store")
        shards = {"samples_per_shard": 100}  # several shards: each goes up while the next is tagged
        disk_data = bl.recipe_data(folder, scratch / "disk", output=shards)
        s3_data = bl.recipe_data(folder, scratch / "unused", output=shards)
        s3_data["source"]["path"] = "s3://tagllm-bench/photos"
        references = source_references(bl.load(disk_data))  # the same image bytes, so the same table

        def run(data: dict, out: str | Path) -> None:
            from builder.run.build import Builder

            engine = bl.sim_engine(data, references)
            result = Builder(bl.load(data), out, engine=engine, overwrite=True, progress=False).run()
            assert result.stats["images"] == n, result.stats

        server_cpu = process_cpu(proc.pid)
        times = bl.alternate({"disk": lambda: run(disk_data, scratch / "disk"),
                              "s3": lambda: run(s3_data, "s3://tagllm-bench/out")}, reps)
        server_cpu = (process_cpu(proc.pid) - server_cpu) / reps
        disk, s3 = bl.median(times["disk"]), bl.median(times["s3"])
        ratio = disk / s3
        bl.figure("STORE s3/disk", ratio, f"s3 {n / s3:.1f} img/s vs disk {n / disk:.1f} img/s, {n} images; "
                  f"disk {bl.fmt_times(times['disk'])}, s3 {bl.fmt_times(times['s3'])}", f">= {GOAL}", ratio >= GOAL)
        fs.invalidate_cache()
        stored = sum(fs.du("tagllm-bench/out", total=False).values())
        bl.info(f"the S3 server itself used {server_cpu:.1f} CPU s per s3 build, on the same "
                f"{os.cpu_count()} cores as the build (a real store's servers are elsewhere)")
        bl.info(f"objects written: {len(fs.find('tagllm-bench/out'))}, {stored / 1e6:.1f} MB in the store; "
                f"disk output {bl.tree_bytes(scratch / 'disk') / 1e6:.1f} MB")
        shutil.rmtree(scratch, ignore_errors=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
