"""COCO reader: image-id order, category sets as labels, lazy bytes, missing files recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from builder.errors import UserError


@pytest.fixture
def coco(tmp_path: Path, make_image) -> dict[str, bytes]:
    """A tiny instances file (images out of id order, sparse category ids) over an image folder."""
    folder = tmp_path / "val2014"
    folder.mkdir()
    files = {
        "COCO_val_000000000042.jpg": make_image("red", "JPEG"),
        "COCO_val_000000000007.jpg": make_image("blue", "JPEG"),
        "plain.png": make_image("green"),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    data: dict[str, Any] = {
        "images": [
            {"id": 42, "file_name": "COCO_val_000000000042.jpg", "width": 6, "height": 4},
            {"id": 7, "file_name": "COCO_val_000000000007.jpg", "width": 6, "height": 4},
            {"id": 99, "file_name": "gone.jpg", "width": 6, "height": 4},
            {"id": 50, "file_name": "plain.png", "width": 6, "height": 4},
        ],
        "categories": [
            {"id": 3, "name": "car", "supercategory": "vehicle"},
            {"id": 17, "name": "cat", "supercategory": "animal"},
            {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 18, "bbox": [0, 0, 1, 1], "iscrowd": 0},
            {"id": 2, "image_id": 42, "category_id": 3, "bbox": [0, 0, 1, 1], "iscrowd": 0},
            {"id": 3, "image_id": 42, "category_id": 18, "bbox": [1, 1, 1, 1], "iscrowd": 1},
            {"id": 4, "image_id": 99, "category_id": 17, "bbox": [0, 0, 1, 1], "iscrowd": 0},
            {"id": 5, "image_id": 50, "category_id": 90, "bbox": [0, 0, 1, 1], "iscrowd": 0},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return files


def test_order_labels_bytes_and_missing(coco: dict[str, bytes], open_src) -> None:
    items = list(open_src("coco", "val2014", annotations="instances.json", label_map={"toothbrush": None}))
    assert [i.ref["image_id"] for i in items] == [7, 42, 50, 99]
    assert [i.key for i in items] == ["COCO_val_000000000007", "COCO_val_000000000042", "plain", "gone"]
    no_objects, two, plain, gone = items
    assert no_objects.reference == [] and no_objects.image == coco["COCO_val_000000000007.jpg"]
    assert two.reference == ["dog", "car"]  # vocabulary order, each once
    assert two.ref == {"file": "COCO_val_000000000042.jpg", "image_id": 42} and two.ext == "jpg"
    assert (plain.reference, plain.ext, plain.image) == ([], "png", coco["plain.png"])
    assert (gone.image, gone.error, gone.reference) == (None, "missing", ["cat"])


def test_unmapped_category_is_a_source_error(coco: dict[str, bytes], open_src) -> None:
    items = {i.key: i for i in open_src("coco", "val2014", annotations="instances.json")}
    assert items["plain"].error == "source" and "toothbrush" in items["plain"].detail
    assert items["plain"].image == coco["plain.png"]
    assert items["COCO_val_000000000042"].error is None


def test_limit_and_lazy_bytes(tmp_path: Path, coco: dict[str, bytes], open_src) -> None:
    src = open_src("coco", "val2014", annotations="instances.json", limit=2)
    stream = iter(src)
    assert next(stream).error is None
    (tmp_path / "val2014" / "COCO_val_000000000042.jpg").unlink()
    assert next(stream).error == "missing"
    assert next(stream, None) is None


def test_setup_errors(tmp_path: Path, coco: dict[str, bytes], open_src) -> None:
    with pytest.raises(UserError, match="needs the instances JSON"):
        open_src("coco", "val2014")
    with pytest.raises(UserError, match="file not found"):
        open_src("coco", "val2014", annotations="nope.json")
    (tmp_path / "bad.json").write_text('{"annotations": []}')
    with pytest.raises(UserError, match="not a COCO instances file"):
        list(open_src("coco", "val2014", annotations="bad.json"))
