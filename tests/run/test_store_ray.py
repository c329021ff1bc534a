"""`--runner ray --out s3://...`: Ray workers with no shared filesystem, each putting its shards in the store.

A worker is killed in the middle of the build; the output must still equal a local one-process
build. Slow (a Ray cluster takes ~15 s to start on 2 cores): `make test-ray`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from run.test_resilience import comparable, labeled_folder
from run.test_store_output import download

from builder.recipe.model import load_recipe
from builder.run.build import Builder
from builder.storage import url_fs

ray = pytest.importorskip("ray")
pytest.importorskip("s3fs")
pytestmark = pytest.mark.slow

N_IMAGES, PER_SHARD = 200, 20  # 10 shards


@pytest.fixture(scope="module")
def bucket():
    """The S3 server's environment set before the cluster starts, so every worker process reaches it."""
    import s3store

    saved = {k: os.environ.get(k) for k in s3store.environment()}
    os.environ.update(s3store.environment())
    s3store.clear_fs_cache()
    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield s3store.new_bucket()
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_ray_workers_write_to_s3_and_survive_a_killed_worker(bucket, tmp_path: Path, small_vocab_file) -> None:
    from builder.run.ray_runner import RayBuilder

    folder = labeled_folder(tmp_path / "photos", N_IMAGES)

    def recipe(name: str, out: str, latency: float = 0.0) -> Path:
        data = {"name": "ray-s3", "source": {"kind": "folder", "path": str(folder)}, "vocabulary": str(small_vocab_file),
                "engine": {"kind": "simulated", "concurrency": 16, "simulation": {"latency": latency}},
                "output": {"dir": out, "samples_per_shard": PER_SHARD}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    Builder(load_recipe(recipe("local", str(tmp_path / "local")), []), tmp_path / "local", progress=False).run()
    url = f"{bucket}/ray"
    loaded = load_recipe(recipe("ray", url, latency=0.01), [])
    builder = RayBuilder(loaded, url, workers=2, progress=False)
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(result=builder.run()), daemon=True)
    thread.start()
    fs, root = url_fs(url)
    deadline, marks = time.time() + 180, []
    while time.time() < deadline and not (builder.worker_pids and marks):  # a shard in, the others under way
        fs.invalidate_cache()
        marks = fs.glob(f"{root}/index/*.stats.json")
        time.sleep(0.05)
    assert marks and len(marks) < N_IMAGES // PER_SHARD, "the build was not under way when the worker was to die"
    first_pids = list(builder.worker_pids)
    os.kill(first_pids[0], signal.SIGKILL)
    thread.join(timeout=300)
    assert "result" in done, "the Ray build did not finish after a worker was killed"
    got = download(url, tmp_path / "got")
    assert comparable(got) == comparable(tmp_path / "local")  # no record twice, none missing, same bytes
    assert sorted(s for s, _ in builder.commits) == list(range(N_IMAGES // PER_SHARD))
    assert {pid for _, pid in builder.commits} - set(first_pids), f"no restarted worker committed: {builder.commits}"
    assert not fs.glob(f"{root}/caches/*")  # every worker's answers folded into cache.sqlite
    assert sorted(p.name for p in (got / "data").iterdir())[-1] == "train-00009-of-00010.parquet"
