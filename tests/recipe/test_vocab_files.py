"""Shipped data files: the COCO-80 vocabulary and the demo set's hand-written labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.recipe.model import SourceSpec
from builder.recipe.vocab import load_vocabulary
from builder.sources import open_source

REPO = Path(__file__).resolve().parents[2]
COCO80 = REPO / "recipes" / "vocab" / "coco80.yaml"
DEMO = REPO / "recipes" / "demo"

GROUPS = {
    "person": 1,
    "vehicle": 8,
    "outdoor": 5,
    "animal": 10,
    "accessory": 5,
    "sports": 10,
    "kitchen": 7,
    "food": 10,
    "furniture": 6,
    "electronic": 6,
    "appliance": 5,
    "indoor": 7,
}


@pytest.fixture(scope="module")
def coco80():
    return load_vocabulary(COCO80)


@pytest.fixture(scope="module")
def demo_rows() -> list[dict]:
    lines = (DEMO / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_coco80_has_80_labels_in_12_groups_in_coco_order(coco80) -> None:
    assert len(coco80.names) == 80 and len(set(coco80.names)) == 80
    assert {g.name: len(g.labels) for g in coco80.groups} == GROUPS
    assert [g.name for g in coco80.groups] == list(GROUPS)
    names = coco80.names
    assert names[:9] == ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"]
    assert names[-7:] == ["book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"]
    assert names.index("dining table") == 60 and names.index("tv") == 62 and names.index("cell phone") == 67


def test_coco80_every_label_is_described_and_synonyms_resolve(coco80) -> None:
    for label in coco80.labels:
        assert label.description.strip() and label.synonyms, label.name
        for word in label.synonyms:
            assert coco80.resolve(word) == label.name, (word, label.name)
    assert coco80.resolve("television") == "tv" and coco80.resolve("sofa") == "couch"
    assert coco80.resolve("motorbike") == "motorcycle"


def test_demo_metadata_labels_and_files(coco80, demo_rows: list[dict]) -> None:
    listed = [row["file_name"] for row in demo_rows]
    assert len(listed) == len(set(listed)) >= 20
    for row in demo_rows:
        assert (DEMO / row["file_name"]).is_file(), row["file_name"]
        assert set(row["labels"]) <= set(coco80.names), row
    on_disk = sorted(p.relative_to(DEMO).as_posix() for p in (DEMO / "images").iterdir())
    assert sorted(listed) == on_disk  # every shipped image is labeled
    groups = {coco80.group_of(name) for row in demo_rows for name in row["labels"]}
    assert len(groups) >= 6
    assert sum(p.stat().st_size for p in (DEMO / "images").iterdir()) < 3_000_000


def test_demo_licenses_name_every_image(demo_rows: list[dict]) -> None:
    text = (DEMO / "LICENSES.md").read_text(encoding="utf-8")
    for row in demo_rows:
        assert f"`{Path(row['file_name']).name}`" in text, row["file_name"]


def test_demo_reads_cleanly_through_the_folder_source(coco80) -> None:
    spec = SourceSpec(kind="folder", path="images", metadata="../metadata.jsonl")
    items = list(open_source(spec, coco80, DEMO))
    assert len(items) >= 20
    assert all(i.error is None and i.reference is not None and i.ext == "jpg" for i in items)
