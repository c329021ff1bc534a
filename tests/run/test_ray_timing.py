"""Observation 6 with Ray: two workers' shards run at the same time; the build's wall time is not their sum.

Slow (starts a private Ray cluster): `make test-ray`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from run.test_resilience import labeled_folder

from builder.publish import layout

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def test_ray_build_wall_time_is_its_own_with_each_worker_apart(tmp_path: Path, small_vocab_file: Path):
    folder = labeled_folder(tmp_path / "photos", 120)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "ray-timing", "source": {"kind": "folder", "path": str(folder)}, "vocabulary": str(small_vocab_file),
        "engine": {"kind": "simulated", "concurrency": 8, "simulation": {"latency": 0.2}},
        "output": {"dir": str(tmp_path / "out"), "samples_per_shard": 10}}))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "builder", "build", str(recipe), "--runner", "ray", "--workers", "2",
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    stats = json.loads((out / layout.STATS).read_text())
    shards = [layout.read_json(layout.shard_stats_path(out, k)) for k in layout.completed_shards(out)]
    print(f"command {took:.1f} s; stats.json wall_seconds {stats['wall_seconds']}, images/s "
          f"{stats['cost']['images_per_second']}; shard walls summed {sum(s['wall_seconds'] for s in shards):.1f} s; "
          f"per worker {stats['tagged_by']}")
    assert stats["wall_seconds"] <= took  # the run, from the lock taken to the card written, within the command
    assert stats["cost"]["images_per_second"] == round(120 / stats["wall_seconds"], 3)
    workers = stats["tagged_by"]
    assert set(workers) == {"worker 0", "worker 1"}
    assert sum(w["images"] for w in workers.values()) == 120
    assert all(0 < w["wall_seconds"] <= stats["wall_seconds"] for w in workers.values())
    # What stats.json said before: the shards' walls added up, more than the command itself took.
    assert sum(s["wall_seconds"] for s in shards) > took > stats["wall_seconds"]
