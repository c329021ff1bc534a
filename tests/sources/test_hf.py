"""Hugging Face reader: save_to_disk and load_dataset dirs, ClassLabel ids, original bytes, streaming."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from builder.errors import UserError
from builder.sources.hf import HFSource

NAMES = ["cat", "dog", "kitten", "unicorn"]


@pytest.fixture
def pngs(tmp_path: Path, make_image) -> list[Path]:
    paths = []
    for n, (color, fmt, ext) in enumerate([("red", "PNG", "png"), ("blue", "JPEG", "jpg"), ("green", "PNG", "png")]):
        p = tmp_path / "raw" / f"{n}.{ext}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(make_image(color, fmt))
        paths.append(p)
    return paths


def labeled(pngs: list[Path]) -> datasets.Dataset:
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "labels": datasets.Sequence(datasets.ClassLabel(names=NAMES)),
            "one": datasets.ClassLabel(names=NAMES),
            "name": datasets.Value("string"),
            "other": datasets.Image(),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "image": [str(p) for p in pngs],
            "labels": [[1, 2], [], [3]],
            "one": [0, 1, 2],
            "name": ["x/a.1", "b", "x/a.1"],
            "other": [str(pngs[0])] * 3,
        },
        features=features,
    )


def test_save_to_disk_ids_to_names_and_original_bytes(tmp_path: Path, pngs: list[Path], open_src) -> None:
    labeled(pngs).save_to_disk(str(tmp_path / "saved"))
    items = list(open_src("hf", "saved", from_disk=True, label_column="labels"))
    assert [i.key for i in items] == ["00000000", "00000001", "00000002"]
    assert [i.image for i in items] == [p.read_bytes() for p in pngs]  # byte-equal, never re-encoded
    assert [i.ext for i in items] == ["png", "jpg", "png"]
    assert items[0].reference == ["cat", "dog"]  # ids 1, 2 -> dog, kitten(synonym of cat)
    assert items[1].reference == [] and items[1].error is None
    assert items[2].error == "source" and "unicorn" in items[2].detail
    assert items[2].image == pngs[2].read_bytes()
    assert items[1].ref == {"dataset": "saved", "split": "train", "index": 1}


def test_dataset_dict_split_key_column_and_single_classlabel(tmp_path: Path, pngs: list[Path], open_src) -> None:
    ds = labeled(pngs)
    datasets.DatasetDict({"train": ds.select([0]), "test": ds}).save_to_disk(str(tmp_path / "dd"))
    src = open_src("hf", "dd", from_disk=True, split="test", label_column="one", key_column="name")
    items = list(src)
    assert [i.key for i in items] == ["x_a_1", "b", "x_a_1_00000002"]  # safe and unique
    assert [i.reference for i in items] == [["cat"], ["dog"], ["cat"]]
    assert [i.ref["split"] for i in items] == ["test"] * 3
    with pytest.raises(UserError, match="'validation' not in"):
        list(open_src("hf", "dd", from_disk=True, split="validation"))


def test_parquet_dir_via_load_dataset_with_label_map_and_limit(tmp_path: Path, pngs: list[Path], open_src) -> None:
    (tmp_path / "pq").mkdir()
    labeled(pngs).to_parquet(str(tmp_path / "pq" / "train.parquet"))
    src = open_src("hf", "pq", label_column="labels", label_map={"unicorn": None}, limit=3)
    items = list(src)
    assert [i.reference for i in items] == [["cat", "dog"], [], []]
    assert [i.image for i in items] == [p.read_bytes() for p in pngs]
    assert len(list(open_src("hf", "pq", limit=2))) == 2


def test_imagefolder_streaming_is_lazy_and_reads_paths(tmp_path: Path, pngs: list[Path], open_src) -> None:
    labels = [["puppy"], ["car", "cat"], []]
    rows = [{"file_name": p.name, "labels": names} for p, names in zip(pngs, labels, strict=True)]
    (tmp_path / "raw" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    stream = iter(open_src("hf", "raw", streaming=True, label_column="labels"))
    first = next(stream)
    assert (first.key, first.reference, first.image) == ("00000000", ["dog"], pngs[0].read_bytes())
    pngs[1].unlink()  # rows and bytes are read as the stream advances, not up front
    second = next(stream)
    assert second.error == "missing" and second.reference == ["cat", "car"]
    assert next(stream).reference == []


def test_rows_are_pulled_one_at_a_time(tmp_path: Path, vocab, make_image) -> None:
    pulled: list[int] = []

    def rows():
        for n in range(1000):
            pulled.append(n)
            yield {"image": {"bytes": make_image(), "path": None}, "labels": [0]}

    features = datasets.Features({"image": datasets.Image(), "labels": datasets.List(datasets.ClassLabel(names=NAMES))})
    src = HFSource(spec_for("gen", label_column="labels"), vocab, tmp_path)
    src._load = lambda: datasets.IterableDataset.from_generator(rows, features=features)  # type: ignore[method-assign]
    item = next(iter(src))
    assert item.reference == ["cat"] and item.ext == "png"
    assert len(pulled) < 10


def test_missing_image_bad_label_and_sniffed_ext(tmp_path: Path, open_src, make_image) -> None:
    features = datasets.Features({"image": datasets.Image(), "tag": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(
        {
            "image": [None, {"bytes": make_image("red", "JPEG"), "path": None}, {"bytes": make_image(), "path": None}],
            "tag": ["cat", "dragon", None],
        },
        features=features,
    )
    ds.save_to_disk(str(tmp_path / "odd"))
    a, b, c = open_src("hf", "odd", from_disk=True, label_column="tag")
    assert (a.image, a.error, a.reference) == (None, "missing", ["cat"])
    assert (b.error, b.ext) == ("source", "jpg") and "dragon" in b.detail and b.image
    assert (c.error, c.ext) == ("source", "png")


def test_unknown_column_is_a_user_error(tmp_path: Path, pngs: list[Path], open_src) -> None:
    labeled(pngs).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError, match="no column 'tags'"):
        list(open_src("hf", "saved", from_disk=True, label_column="tags"))
    with pytest.raises(UserError, match="no saved dataset"):
        list(open_src("hf", "nothing", from_disk=True))


def spec_for(path: str, **fields):
    from builder.recipe.model import SourceSpec

    return SourceSpec(kind="hf", path=path, **fields)
