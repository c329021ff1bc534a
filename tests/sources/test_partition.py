"""Shard i of n: every reader cuts the same stable order, reading only what each shard needs."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from sources.test_coco import coco  # noqa: F401  (fixture)
from sources.test_webdataset import write_tar

from builder.sources import Source

SIZES = (1, 2, 3, 7)


def as_tuples(items) -> list[tuple]:
    return [(i.key, i.image, i.ext, i.reference, i.error, json.dumps(i.ref, sort_keys=True)) for i in items]


def assert_partition(source: Source, expect_count: bool = True) -> None:
    """Concatenated shards equal one full read, for several shard sizes; the count agrees."""
    full = as_tuples(source)
    assert full, "fixture yields no items"
    assert source.total() == (len(full) if expect_count else None)
    for size in SIZES:
        n = source.shard_count(size) if expect_count else -(-len(full) // size)
        parts = [as_tuples(source.shard(i, size)) for i in range(n)]
        assert [len(p) for p in parts[:-1]] == [size] * (n - 1)
        assert sum(parts, []) == full, f"size {size}"
        assert list(source.shard(n, size)) == []


def test_folder_shards(tmp_path: Path, make_image, open_src) -> None:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(9):
        (folder / ("sub" if i % 3 == 0 else ".") / f"x{i}.jpg").write_bytes(make_image("red", "JPEG"))
    (folder / "x1.png").write_bytes(make_image("blue"))  # same stem as x1.jpg: keys take the extension
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "gone.jpg", "labels": ["cat"]}) + "\n")
    assert_partition(open_src("folder", folder))
    assert_partition(open_src("folder", folder, limit=5))


def test_coco_shards(tmp_path: Path, coco, open_src) -> None:  # noqa: F811 (the fixture)
    source = open_src("coco", tmp_path / "val2014", annotations=str(tmp_path / "instances.json"),
                      label_map={"toothbrush": None})
    assert_partition(source)


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_shards_with_repeated_keys(tmp_path: Path, make_image, open_src, streaming: bool) -> None:
    rows = {"image": [{"bytes": make_image(c), "path": None} for c in ("red", "blue", "green", "white", "black")] * 2,
            "name": ["a", "b", "a", "c", "b", "d", "a", "e", "f", "g"],
            "labels": [["cat"], ["dog"], [], ["car"], ["cat", "dog"]] * 2}
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features({
        "image": datasets.Image(), "name": datasets.Value("string"),
        "labels": datasets.List(datasets.Value("string"))}))
    ds.save_to_disk(str(tmp_path / "saved"))
    source = open_src("hf", tmp_path / "saved", from_disk=True, streaming=streaming, key_column="name",
                      label_column="labels")
    assert_partition(source, expect_count=not streaming)


def test_webdataset_shards_read_only_their_tars(tmp_path: Path, make_image, open_src, monkeypatch) -> None:
    for t in range(3):  # the same sample names in every tar: keys are deduplicated across tars
        write_tar(tmp_path / "wds" / f"part-{t:03d}.tar",
                  [(f"s{i}.jpg", make_image("red", "JPEG")) for i in range(t + 2)]
                  + [("__meta__.json", b"{}")])
    source = open_src("webdataset", tmp_path / "wds")
    assert_partition(source)
    opened: list[list[str]] = []
    real = type(source)._samples

    def spy(self, urls=None):
        opened.append([Path(u).name for u in urls or self.shard_urls()])
        return real(self, urls)

    monkeypatch.setattr(type(source), "_samples", spy)
    assert [i.key for i in source.shard(4, 2)] == ["part-002_s1", "part-002_s2"]
    assert opened == [["part-002.tar"]]
