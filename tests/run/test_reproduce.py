"""`make reproduce-coco` end to end on a small COCO-layout fixture with the simulated engine (slow).

The fixture is COCO 2014's official layout (train2014/, val2014/, annotations/instances_*.json) with a
few dozen small images made here; each image's colours follow its labels, so the classifiers have
something to learn. The table must be complete and say SIMULATED.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = [(1, "person", (220, 40, 40)), (3, "car", (40, 200, 40)), (17, "cat", (40, 40, 220)),
              (18, "dog", (230, 200, 30))]


def write_coco_split(root: Path, split: str, n: int, seed: int) -> None:
    """`root/<split>/COCO_<split>_<id>.jpg` and `root/annotations/instances_<split>.json`."""
    rng = random.Random(seed)
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        image_id = 1000 + i
        name = f"COCO_{split}_{image_id:012d}.jpg"
        present = [c for c in CATEGORIES if rng.random() < 0.4] or [rng.choice(CATEGORIES)]
        img = Image.new("RGB", (64, 48), (128, 128, 128))
        draw = ImageDraw.Draw(img)
        for k, (cat_id, _, colour) in enumerate(present):
            x = 4 + 15 * k
            draw.rectangle([x, 8, x + 12, 40], fill=colour)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id,
                                "bbox": [x, 8, 12, 32], "area": 384.0, "iscrowd": 0, "segmentation": []})
        img.save(root / split / name, format="JPEG", quality=90)
        images.append({"id": image_id, "file_name": name, "width": 64, "height": 48})
    data = {"info": {"description": "tagllm test fixture"}, "licenses": [], "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": "x"} for i, n, _ in CATEGORIES]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.slow
def test_make_reproduce_coco_prints_the_simulated_table(tmp_path: Path) -> None:
    data = tmp_path / "coco"
    write_coco_split(data, "train2014", 48, seed=1)
    write_coco_split(data, "val2014", 24, seed=2)
    out = tmp_path / "repro"
    venv = Path(sys.prefix)
    stamp = venv / (".installed-" + hashlib.sha1((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12])
    args = f"--backbone tinycnn --pretrained false --epochs 2 --batch-size 16 --workers 0 --no-progress --out {out}"
    cmd = ["make", "-C", str(ROOT), f"--old-file={stamp}", "reproduce-coco", f"VENV={venv}", f"DATA={data}",
           "ENGINE=simulated", f"REPRO_ARGS={args}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout
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
