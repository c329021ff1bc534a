"""`--runner ray` on a local Ray cluster: same output as one process, worker and driver deaths survived.

Slow (a Ray cluster takes ~15 s to start on 2 cores): `make test-ray`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from run.test_resilience import comparable, labeled_folder

from builder.publish import layout
from builder.recipe.model import load_recipe
from builder.run.build import Builder

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

N_IMAGES, PER_SHARD = 300, 25  # 12 shards


@pytest.fixture(scope="module")
def cluster():
    """A private local cluster: 2 CPUs, a small object store, no dashboard."""
    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cluster):
    """300 labeled photos, a recipe factory, and the single-process build to compare with."""
    from tinydata import SMALL_VOCAB

    root = tmp_path_factory.mktemp("ray")
    folder = labeled_folder(root / "photos", N_IMAGES)
    vocab = root / "vocab.yaml"
    vocab.write_text(yaml.safe_dump(SMALL_VOCAB, sort_keys=False))

    def recipe(name: str, latency: float = 0.0) -> Path:
        """A recipe writing to root/name; the simulated engine journals every answered request."""
        data = {"name": "ray-test", "source": {"kind": "folder", "path": str(folder)}, "vocabulary": str(vocab),
                "engine": {"kind": "simulated", "concurrency": 16, "simulation": {"latency": latency},
                           "args": {"journal": str(root / f"{name}.journal")}},
                "output": {"dir": str(root / name), "samples_per_shard": PER_SHARD}}
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    single = load_recipe(recipe("single"), [])
    Builder(single, root / "single", progress=False).run()
    return root, recipe, comparable(root / "single")


def ray_build(recipe: Path, workers: int = 2):
    from builder.run.ray_runner import RayBuilder

    loaded = load_recipe(recipe, [])
    return RayBuilder(loaded, Path(loaded.recipe.output.dir), workers=workers, progress=False)


def test_two_workers_equal_single_process(setup) -> None:
    root, recipe, expected = setup
    builder = ray_build(recipe("two"))
    result = builder.run()
    got = comparable(root / "two")
    assert len(got["records"]) == N_IMAGES and len(got["images"]) == N_IMAGES
    assert got == expected  # keys, labels, scores, candidates, reference, image bytes, HF rows
    assert result.shards == N_IMAGES // PER_SHARD and result.stats["images"] == N_IMAGES
    assert sorted(s for s, _ in builder.commits) == list(range(12))  # each shard committed once
    assert len({pid for _, pid in builder.commits}) == 2 == len(set(builder.worker_pids))
    single_stats = json.loads((root / "single" / "stats.json").read_text())
    assert result.stats["requests"] == single_stats["requests"] == result.sent  # every request sent once
    assert sorted(p.name for p in (root / "two" / "data").iterdir())[-1] == "train-00011-of-00012.parquet"


def test_killed_worker_mid_shard_still_gives_identical_output(setup) -> None:
    root, recipe, expected = setup
    builder = ray_build(recipe("kill-worker", latency=0.01))
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(result=builder.run()), daemon=True)
    thread.start()
    deadline = time.time() + 180
    out = root / "kill-worker"
    # wait until a worker is in the middle of a shard: one shard committed, another one half written
    while time.time() < deadline and not (builder.worker_pids and len(layout.completed_shards(out)) >= 1
                                          and list((out / "webdataset").glob(".shard-*.tmp"))):
        time.sleep(0.02)
    assert time.time() < deadline, "the build never reached the middle of a shard"
    half_written = sorted(p.name for p in (out / "webdataset").glob(".shard-*.tmp"))
    victim, first_pids = builder.worker_pids[0], list(builder.worker_pids)
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert "result" in done, "the Ray build did not finish after a worker was killed"
    assert comparable(out) == expected
    assert sorted(layout.completed_shards(out)) == list(range(12))
    assert half_written, "no shard was half written when the worker was killed"
    restarted = {pid for _, pid in builder.commits} - set(first_pids)
    assert restarted, f"no restarted worker committed a shard: {builder.commits}"
    assert not list(out.rglob(".*.tmp")), "temporary files left behind"
    assert_nothing_answered_twice(root / "kill-worker.journal", root / "single.journal")


def assert_nothing_answered_twice(journal: Path, clean: Path) -> None:
    """Cached answers were replayed, not asked again: only answers not yet stored at the kill may repeat.

    An image's answers to one kind of question are stored together when the last of them is in, and committed
    in batches (at most two uncommitted, `BATCH` answers each), so what a killed worker can lose is the answers
    of the images in its task window (16: the engine's concurrency) plus two batches; two workers.
    """
    from builder.ask.cache import BATCH

    sends = journal.read_text().split()
    again = len(sends) - len(set(sends))
    assert set(sends) == set(clean.read_text().split())
    per_image = max(r.usage["requests"] for r in layout.iter_records(clean.parent / "single"))
    bound = 2 * (16 * per_image + 2 * BATCH)
    print(f"{journal.name}: {len(sends)} answered, {again} answered twice (bound {bound})")
    assert again <= bound < len(sends) / 2, f"{again} answered requests were sent again"


def test_killed_driver_resumes(setup, cluster) -> None:
    root, recipe, expected = setup
    path = recipe("kill-driver", latency=0.01)
    cmd = [sys.executable, "-m", "builder", "build", str(path), "--runner", "ray", "--address", cluster,
           "--workers", "2", "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = root / "kill-driver"
    deadline = time.time() + 180
    while time.time() < deadline and len(layout.completed_shards(out)) < 3 and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, "the driver finished before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = len(layout.completed_shards(out))
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    import re

    reused = int(re.search(r"shards 12 \((\d+) kept from an earlier run\)", second.stdout).group(1))
    assert 3 <= kept <= reused < 12, second.stdout  # finished shards were kept, the rest done now
    assert comparable(out) == expected
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert_nothing_answered_twice(root / "kill-driver.journal", root / "single.journal")
