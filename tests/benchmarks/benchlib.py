"""Shared helpers of the benchmark scripts: generated photo folders, recipes, timing, output lines.

The scripts are not tests: pytest collects only `test_bench_smoke.py` here. Every script prints one
line per figure in the form

    NAME: ratio R (raw numbers) goal G PASS|MISS

and extra information on lines that start with `#`. Generated data lives under the system temp
folder (`$TMPDIR/tagllm-bench`, or `$TAGLLM_BENCH_DIR`), is made once and reused across runs.
"""

from __future__ import annotations

import io
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VOCAB = REPO / "recipes" / "vocab" / "coco80.yaml"
CONCEPTS = REPO / "recipes" / "concepts" / "coco80.yaml"
DEMO_RECIPE = REPO / "recipes" / "demo.yaml"
DATA_VERSION = "v1"  # bump when the generator changes

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --- where things go ------------------------------------------------------------------------------
def bench_root() -> Path:
    root = Path(os.environ.get("TAGLLM_BENCH_DIR") or Path(tempfile.gettempdir()) / "tagllm-bench")
    root.mkdir(parents=True, exist_ok=True)
    return root


def scratch(prefix: str) -> Path:
    """A fresh temporary folder for outputs (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=f"tagllm-bench-{prefix}-"))


# --- generated photos -----------------------------------------------------------------------------
def photo_jpeg(seed: int, width: int = 640, height: int = 480, quality: int = 88) -> bytes:
    """A photo-like JPEG: smooth colour gradients, mid-frequency texture and sensor grain.

    At 640x480 and quality 88 these compress to about 70 KB, like a typical web photo.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(30, 225, (3, 4, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC), np.int16)
    mid = rng.integers(0, 255, (max(2, height // 12), max(2, width // 12), 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(mid).resize((width, height), Image.Resampling.BICUBIC), np.int16)
    img = img + (texture - 128) // 3
    img = img + rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def vocab_names() -> list[str]:
    import yaml

    data = yaml.safe_load(VOCAB.read_text(encoding="utf-8"))
    return [label["name"] for group in data["groups"] for label in group["labels"]]


def photo_folder(n: int, width: int = 640, height: int = 480) -> Path:
    """A folder of `n` generated JPEGs with COCO-80 labels in metadata.jsonl (made once, then reused).

    Labels: 1-5 per image (about 2.9 on average, like COCO), "person" in about half of them.
    """
    folder = bench_root() / f"photos-{n}-{width}x{height}-{DATA_VERSION}"
    if (folder / ".complete").is_file():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=bench_root()))
    names = vocab_names()
    rng = random.Random(n * 7919 + width)
    with open(tmp / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for i in range(n):
            name = f"img{i:06d}.jpg"
            (tmp / name).write_bytes(photo_jpeg(i, width, height))
            labels = set(rng.sample(names[1:], rng.choice((1, 1, 2, 2, 2, 3, 3, 4))))
            if rng.random() < 0.5:
                labels.add("person")
            meta.write(json.dumps({"file_name": name, "labels": [x for x in names if x in labels]}) + "\n")
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:  # another run made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(images, total bytes) of the JPEGs in a generated folder."""
    files = list(folder.glob("*.jpg"))
    return len(files), sum(f.stat().st_size for f in files)


# --- recipes --------------------------------------------------------------------------------------
def recipe_data(source_dir: Path, out: Path, *, engine: dict[str, Any] | None = None,
                tagging: dict[str, Any] | None = None, output: dict[str, Any] | None = None,
                limit: int | None = None) -> dict[str, Any]:
    """A recipe over a generated folder: COCO-80 vocabulary and concept sheet, simulated engine."""
    source: dict[str, Any] = {"kind": "folder", "path": str(source_dir)}
    if limit:
        source["limit"] = limit
    data: dict[str, Any] = {
        "name": "tagllm-bench",
        "source": source,
        "vocabulary": str(VOCAB),
        "engine": {"kind": "simulated", "concurrency": 64, **(engine or {})},
        "tagging": {"strategy": "tagllm", "threshold": 0.5, **(tagging or {})},
        "output": {"dir": str(out), "formats": ["webdataset", "hf"], **(output or {})},
    }
    if CONCEPTS.is_file():
        data["tagging"].setdefault("concept_sheet", str(CONCEPTS))
    return data


def write_recipe(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load(data: dict[str, Any], origin: str = "bench") -> Any:
    """A LoadedRecipe from recipe data (relative paths resolve against the repository)."""
    from builder.recipe.model import recipe_from_data

    return recipe_from_data(data, origin, REPO)


def sim_engine(data: dict[str, Any], references: dict[str, list[str] | None]) -> Any:
    """The simulated engine of recipe data, answering from a reference table made beforehand
    (`source_references`), so a timed build does not also time the table's image decoding."""
    from builder.engines.registry import engine_from_spec

    loaded = load(data)
    return engine_from_spec(loaded.recipe.engine, loaded.vocab, references=references)


def build(data: dict[str, Any], out: Path, engine: Any = None) -> Any:
    """One in-process `tagllm build` of recipe data into `out` (overwritten), progress off."""
    from builder.run.build import Builder

    return Builder(load(data), out, engine=engine, overwrite=True, progress=False).run()


# --- timing and reporting -------------------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU time so far of this process (all threads) and of its live children (the build's decode
    workers), user + system; children that exited are counted by the kernel in RUSAGE_CHILDREN."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total + children_cpu()


def children_cpu() -> float:
    """utime + stime of the running child processes (Linux /proc; 0 elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids = children.read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def alternate(sides: dict[str, Callable[[], Any]], reps: int, on_rep: Callable[[str, int, float], None] | None = None,
              cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Run the sides in turn, `reps` times each, reversing the order every other rep (ABBA...).

    Returns wall seconds per side; CPU seconds per side go into `cpu` when given.
    """
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for rep in range(reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            cpu0 = cpu_seconds()
            started = time.perf_counter()
            sides[name]()
            elapsed = time.perf_counter() - started
            times[name].append(elapsed)
            if cpu is not None:
                cpu.setdefault(name, []).append(cpu_seconds() - cpu0)
            if on_rep:
                on_rep(name, rep, elapsed)
    return times


def tree_bytes(path: Path) -> int:
    """Bytes of every file under a folder (0 when it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_times(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "] s"


def figure(name: str, ratio: float, raw: str, goal: str, ok: bool) -> str:
    """The one line of a figure: name, ratio, raw numbers, goal, PASS/MISS."""
    line = f"{name}: ratio {ratio:.3f} ({raw}) goal {goal} {'PASS' if ok else 'MISS'}"
    print(line, flush=True)
    return line


def info(text: str) -> None:
    for line in str(text).splitlines() or [""]:
        print(f"# {line}", flush=True)


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    return (f"machine: {cpu}, {cores} cores{mem}, Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.release()}")


# --- processes and ports --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f}s")


def get_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    return env
