"""`make reproduce-coco` end to end on a small COCO-layout fixture with the simulated engine (slow).

The fixture is COCO 2014's official layout (train2014/, val2014/, annotations/instances_*.json) with a
few dozen small images made here; each image's colours follow its labels, so the classifiers have
something to learn. The table must be complete and say SIMULATED.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from layouts import write_coco_split, write_objects365

ROOT = Path(__file__).resolve().parents[2]


def run_make(target: list[str], data: Path, out: Path, tmp_path: Path) -> str:
    """The Makefile target as a user runs it, in this venv (its install stamp counts as done), simulated."""
    venv = Path(sys.prefix)
    stamp = venv / (".installed-" + hashlib.sha1((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12])
    args = f"--backbone tinycnn --pretrained false --epochs 2 --batch-size 16 --workers 0 --no-progress --out {out}"
    cmd = ["make", "-C", str(ROOT), f"--old-file={stamp}", *target, f"VENV={venv}", f"DATA={data}",
           "ENGINE=simulated", f"REPRO_ARGS={args}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_make_reproduce_coco_prints_the_simulated_table(tmp_path: Path) -> None:
    data = tmp_path / "coco"
    write_coco_split(data, "train2014", 48, seed=1)
    write_coco_split(data, "val2014", 24, seed=2)
    out = tmp_path / "repro"
    table = run_make(["reproduce-coco"], data, out, tmp_path)
    assert table.count("SIMULATED") >= 2
    for heading in ("Label quality on the train split", "Downstream classifier", "Cost per image"):
        assert heading in table
    quality = re.search(r"^\| tagllm \| 48 \|(.*)\|$", table, re.M)
    assert quality, table
    assert len([c for c in quality.group(1).split("|") if re.fullmatch(r"\s*[01]\.\d{3}\s*", c)]) == 7
    for row in ("human labels", "tagllm labels", "all-in-one labels"):
        assert re.search(rf"^\| {row} \| 48 \| 24 \| [01]\.\d{{3}} \|$", table, re.M), row
    assert re.search(r"mAP ratio \(tagllm / human\): \d\.\d{3}", table)
    assert re.search(r"gap closed over all-in-one: (-?\d+\.\d{3}|-) ", table)
    cost = re.search(r"^\| tagllm \|(.*)\|$", table.split("Cost per image")[1], re.M)
    assert cost and all(re.fullmatch(r"\s*\d+(\.\d+)?\s*", c) for c in cost.group(1).split("|")), table
    result = json.loads((out / "reproduce.json").read_text())
    assert result["simulated"] is True and result["engine"]["engine"] == "simulated"
    assert result["label_quality"]["tagllm"]["images"] == 48
    assert result["cost"]["tagllm"]["requests_per_image"] > result["cost"]["baseline"]["requests_per_image"]
    assert result["table"] == (out / "reproduce.md").read_text()


@pytest.mark.slow
def test_make_reproduce_objects365_shares_the_plumbing(tmp_path: Path) -> None:
    data = tmp_path / "objects365"
    names = {1: "Person", 6: "Car", 38: "Moniter/TV", 53: "Bakset"}
    for split, n, offset in (("train", 20, 0), ("val", 10, 100)):
        images = [(offset + i, f"patch{i % 3}/objects365_v2_{offset + i:08d}.jpg", [c for c in names if (i + c) % 3])
                  for i in range(n)]
        write_objects365(data, split, images, names)
    table = run_make(["reproduce", "DATASET=objects365"], data, tmp_path / "repro", tmp_path)
    assert table.count("SIMULATED") >= 2 and "TagLLM reproduction: objects365" in table
    assert re.search(r"^\| tagllm \| 20 \|", table, re.M)
    for row in ("human labels", "tagllm labels", "all-in-one labels"):
        assert re.search(rf"^\| {row} \| 20 \| 10 \| [01]\.\d{{3}} \|$", table, re.M), row

