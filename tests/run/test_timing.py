"""Observation 6: a build's figures are its own: wall time from its start to its end (overlapping
shards, workers and parts are not added up), images/s from it, per part or worker apart."""

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
from builder.publish.stats import busy_seconds, timing


def test_busy_seconds_is_the_union_of_spans():
    assert busy_seconds([]) == 0
    assert busy_seconds([(0, 10), (2, 5), (8, 12), (20, 21)]) == 13
    assert busy_seconds([(5, 6), (0, 1)]) == 2


def test_timing_per_worker_and_old_shards_without_spans():
    shards = [{"images": 10, "started": 0, "finished": 10, "by": "worker 0"},
              {"images": 10, "started": 1, "finished": 9, "by": "worker 0"},
              {"images": 20, "started": 0, "finished": 8, "by": "worker 1"},
              {"images": 5, "wall_seconds": 3.0}]  # written before shards carried their span
    out = timing(shards, [{"started": -2, "finished": 11}])
    assert out["wall_seconds"] == 13 + 3
    assert out["tagged_by"] == {
        "worker 0": {"shards": 2, "images": 20, "wall_seconds": 10, "images_per_second": 2.0},
        "worker 1": {"shards": 1, "images": 20, "wall_seconds": 8, "images_per_second": 2.5}}


def test_a_build_reports_its_run_from_start_to_end(build):
    started = time.time()
    result = build()
    took = time.time() - started
    stats = json.loads((result.out / layout.STATS).read_text())
    assert 0 < stats["wall_seconds"] <= took
    assert stats["cost"]["images_per_second"] == round(stats["images"] / stats["wall_seconds"], 3)
    (run,) = json.loads((result.out / layout.MANIFEST).read_text())["runs"]
    assert started <= run["started"] < run["finished"] <= started + took
    assert "tagged_by" not in stats
    assert f"| Wall time | {stats['wall_seconds']} s, from the build's start to its end |" in \
        (result.out / layout.CARD).read_text()


def test_parts_running_side_by_side_are_not_added_up(tmp_path: Path, small_vocab_file: Path):
    folder = labeled_folder(tmp_path / "photos", 24)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "timing", "source": {"kind": "folder", "path": str(folder)}, "vocabulary": str(small_vocab_file),
        "engine": {"kind": "simulated", "concurrency": 4, "simulation": {"latency": 0.05}},
        "output": {"dir": str(tmp_path / "out"), "samples_per_shard": 4}}))
    started = time.time()
    procs = [subprocess.Popen([sys.executable, "-m", "builder", "build", str(recipe), "--part", f"{i}/2",
                               "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=240) == 0, proc.communicate()
    took = time.time() - started
    fin = subprocess.run([sys.executable, "-m", "builder", "finalize", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=240)
    assert fin.returncode == 0, fin.stderr
    stats = json.loads((tmp_path / "out" / layout.STATS).read_text())
    parts = stats["tagged_by"]
    assert set(parts) == {"part 0/2", "part 1/2"}
    assert sum(p["images"] for p in parts.values()) == stats["images"] == 24
    spans = [json.loads(m.read_text())["runs"][0] for m in sorted((tmp_path / "out" / "parts").glob("*.json"))]
    first, last = min(s["started"] for s in spans), max(s["finished"] for s in spans)
    assert stats["wall_seconds"] == pytest.approx(busy_seconds([(s["started"], s["finished"]) for s in spans]), abs=1e-3)
    assert stats["wall_seconds"] <= last - first + 1e-3 <= took
    if spans[0]["finished"] > spans[1]["started"] and spans[1]["finished"] > spans[0]["started"]:  # they overlapped
        assert stats["wall_seconds"] < sum(p["wall_seconds"] for p in parts.values())
    for part in parts.values():
        assert part["images_per_second"] == round(part["images"] / part["wall_seconds"], 3)
    assert stats["cost"]["images_per_second"] == round(24 / stats["wall_seconds"], 3)
    card = (tmp_path / "out" / layout.CARD).read_text()
    assert f"part 0/2: {parts['part 0/2']['images']} images in {parts['part 0/2']['wall_seconds']} s" in card
