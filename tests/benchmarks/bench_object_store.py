"""STORE: a build reading from and writing to a local S3 server vs the same build on local disk.

Side disk: WebDataset tars (100 images each, as img2dataset and the field ship image sets) on local
disk -> output folder on local disk.
Side s3: the same tars in a bucket of moto's S3 server (its own process on 127.0.0.1, reached through
AWS_ENDPOINT_URL as s3fs reads it) -> `--out s3://bucket/out`.
Both use the instant simulated engine with one reference table made beforehand, formats webdataset
+ hf, 100 records per shard, progress off, overwrite each rep; the sides alternate (ABBA). The figure
is the median throughput ratio s3/disk (images/s). Goal >= 0.8: the store must not be what a build
waits on. A `#` line gives the same ratio for a folder of one object per image (each image a request),
and what the server and the store's client cost in CPU.

    .venv/bin/python tests/benchmarks/bench_object_store.py [--quick] [--images N] [--reps R]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import benchlib as bl

from builder.engines.references import source_references

GOAL = 0.8
BUCKET = "tagllm-bench"
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


def tar_shards(folder: Path, per_tar: int = 100) -> Path:
    """The generated photos as WebDataset tars ({key}.jpg + {key}.json with its labels), made once."""
    out = folder.with_name(folder.name + f"-tars{per_tar}")
    if (out / ".complete").is_file():
        return out
    out.mkdir(exist_ok=True)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    for start in range(0, len(rows), per_tar):
        with tarfile.open(out / f"shard-{start // per_tar:05d}.tar", "w") as tar:
            for row in rows[start:start + per_tar]:
                key = row["file_name"].rsplit(".", 1)[0]
                for name, data in ((f"{key}.jpg", (folder / row["file_name"]).read_bytes()),
                                   (f"{key}.json", json.dumps({"labels": row["labels"]}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (out / ".complete").write_text("ok\n")
    return out


def compare(name: str, disk_data: dict, s3_data: dict, disk_out: Path, n: int, reps: int, server: int) -> dict:
    """Alternate the two builds; returns wall and CPU seconds per side and the server's CPU per s3 build."""
    from builder.run.build import Builder

    references = source_references(bl.load(disk_data))  # the same image bytes, so the same table

    def run(data: dict, out: str | Path) -> None:
        engine = bl.sim_engine(data, references)
        result = Builder(bl.load(data), out, engine=engine, overwrite=True, progress=False).run()
        assert result.stats["images"] == n == result.stats["ok"], result.stats

    before, cpu = process_cpu(server), {}
    times = bl.alternate({"disk": lambda: run(disk_data, disk_out), "s3": lambda: run(s3_data, f"s3://{BUCKET}/out")},
                         reps, cpu=cpu)
    return {"times": times, "cpu": cpu, "server": (process_cpu(server) - before) / reps, "name": name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int)
    parser.add_argument("--reps", type=int)
    args = parser.parse_args()
    n = args.images or (200 if args.quick else 1000)
    reps = args.reps or (2 if args.quick else 4)
    folder = bl.photo_folder(n)
    tars = tar_shards(folder)
    proc, endpoint = start_server()
    os.environ.update(KEYS, AWS_ENDPOINT_URL=endpoint)
    try:
        import fsspec

        fs = fsspec.filesystem("s3")
        fs.mkdir(BUCKET)
        fs.put([str(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")],
               f"{BUCKET}/photos/")
        fs.put([str(p) for p in sorted(tars.glob("*.tar"))], f"{BUCKET}/tars/")
        scratch = bl.scratch("object-store")
        shards = {"samples_per_shard": 100}  # several shards: each goes up while the next is tagged
        disk_tars = bl.recipe_data(folder, scratch / "disk", output=shards)
        disk_tars["source"] = {"kind": "webdataset", "path": str(tars), "label_column": "json"}
        s3_tars = {**disk_tars, "source": {**disk_tars["source"], "path": f"s3://{BUCKET}/tars"}}
        disk_folder = bl.recipe_data(folder, scratch / "disk", output=shards)
        s3_folder = {**disk_folder, "source": {**disk_folder["source"], "path": f"s3://{BUCKET}/photos"}}
        main = compare("tars", disk_tars, s3_tars, scratch / "disk", n, reps, proc.pid)
        side = compare("folder", disk_folder, s3_folder, scratch / "disk", n, max(2, reps // 2), proc.pid)
        for result in (main, side):
            t, c = result["times"], result["cpu"]
            disk, s3 = bl.median(t["disk"]), bl.median(t["s3"])
            raw = (f"s3 {n / s3:.1f} img/s vs disk {n / disk:.1f} img/s, {n} images; disk {bl.fmt_times(t['disk'])}, "
                   f"s3 {bl.fmt_times(t['s3'])}")
            if result is main:
                bl.figure("STORE s3/disk", disk / s3, f"source: {n // 100} tars; " + raw, f">= {GOAL}", disk / s3 >= GOAL)
            else:
                bl.info(f"source a folder of {n} objects (one request per image): ratio {disk / s3:.3f} ({raw})")
            bl.info(f"  {result['name']}: CPU of the build process s3 {bl.median(c['s3']):.1f} s vs disk "
                    f"{bl.median(c['disk']):.1f} s; the S3 server itself {result['server']:.1f} CPU s per s3 build, "
                    f"on the same {os.cpu_count()} cores (a real store's servers are elsewhere)")
        fs.invalidate_cache()
        stored = sum(fs.du(f"{BUCKET}/out", total=False).values())
        bl.info(f"objects written: {len(fs.find(f'{BUCKET}/out'))}, {stored / 1e6:.1f} MB in the store; "
                f"disk output {bl.tree_bytes(scratch / 'disk') / 1e6:.1f} MB")
        shutil.rmtree(scratch, ignore_errors=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
