"""Folder reader: stable keys and order, original bytes, imagefolder-style labels, recorded failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import UserError
from builder.sources.folder import unique_keys


def write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.fixture
def tree(tmp_path: Path, make_image) -> dict[str, bytes]:
    root = tmp_path / "imgs"
    files = {
        "b.jpg": make_image("red", "JPEG"),
        "sub/a.PNG": make_image("blue", "PNG"),
        "sub/deep/c.v2.webp": make_image("green", "WEBP"),
        "a.gif": make_image("white", "GIF"),
    }
    for rel, data in files.items():
        write(root / rel, data)
    write(root / "notes.txt", b"not an image")
    write(root / ".hidden/x.jpg", make_image())
    write(root / ".y.png", make_image())
    return files


def test_order_keys_bytes_and_refs(tree: dict[str, bytes], open_src) -> None:
    src = open_src("folder", "imgs")
    items = list(src)
    assert [i.ref["path"] for i in items] == ["a.gif", "b.jpg", "sub/a.PNG", "sub/deep/c.v2.webp"]
    assert [i.key for i in items] == ["a", "b", "sub_a", "sub_deep_c_v2"]
    assert [i.ext for i in items] == ["gif", "jpg", "png", "webp"]
    for item in items:
        assert item.image == tree[item.ref["path"]]  # byte-equal: never re-encoded
        assert item.error is None and item.reference is None
    assert [i.key for i in open_src("folder", "imgs")] == [i.key for i in items]


def test_colliding_keys_get_extension_then_number(tmp_path: Path, open_src, make_image) -> None:
    for rel in ("a.jpg", "a.png", "x/y.jpg", "x_y.jpg"):
        write(tmp_path / "d" / rel, make_image())
    keys = {i.ref["path"]: i.key for i in open_src("folder", "d")}
    assert keys == {"a.jpg": "a_jpg", "a.png": "a_png", "x/y.jpg": "x_y_jpg", "x_y.jpg": "x_y_jpg_2"}
    assert unique_keys(["x_y.jpg", "x/y.jpg", "a.png", "a.jpg"]) == keys  # independent of listing order


def test_jsonl_labels_synonyms_label_map_and_failures(tmp_path: Path, open_src, make_image) -> None:
    root = tmp_path / "d"
    good = write(root / "1.jpg", make_image("red", "JPEG"))
    write(root / "2.png", make_image("blue"))
    bad = write(root / "3.png", make_image("green"))
    write(root / "4.png", b"")
    write(root / "5.png", make_image("black"))
    rows = [
        {"file_name": "1.jpg", "labels": ["dog", "kitten", "auto", "dog", "skip-me"]},
        {"file_name": "./2.png", "labels": []},
        {"file_name": "3.png", "labels": ["unicorn"]},
        {"file_name": "4.png", "labels": ["cat"]},
        {"file_name": "gone.jpg", "labels": ["car"]},
    ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    src = open_src("folder", "d", label_map={"auto": "car", "skip-me": None})
    items = {i.key: i for i in src}
    assert list(items) == ["1", "2", "3", "4", "5", "gone"]
    assert items["1"].reference == ["cat", "dog", "car"]  # vocabulary order, deduped
    assert items["1"].image == good and items["1"].error is None
    assert items["2"].reference == []
    assert items["3"].error == "source" and "unicorn" in items["3"].detail
    assert items["3"].image == bad  # the bytes are still read
    assert items["4"].error == "empty" and items["4"].image is None
    assert items["5"].reference is None and items["5"].error is None  # no metadata row: unlabeled
    gone = items["gone"]
    assert (gone.image, gone.error, gone.ext, gone.ref) == (None, "missing", "jpg", {"path": "gone.jpg"})
    assert gone.reference == ["car"]


def test_csv_with_custom_column_and_separators(tmp_path: Path, open_src, make_image) -> None:
    root = tmp_path / "d"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write(root / name, make_image())
    (root / "metadata.csv").write_text('file_name,tags\na.jpg,cat;dog\nb.jpg,"hot dog, car"\nc.jpg,\n')
    items = {i.key: i.reference for i in open_src("folder", "d", label_column="tags")}
    assert items == {"a": ["cat", "dog"], "b": ["car", "hot dog"], "c": []}


def test_metadata_beside_the_folder_like_the_demo(tmp_path: Path, open_src, make_image) -> None:
    write(tmp_path / "demo/images/x.jpg", make_image())
    (tmp_path / "demo/metadata.jsonl").write_text('{"file_name": "images/x.jpg", "labels": ["puppy"]}\n')
    (item,) = open_src("folder", "demo/images", metadata="../metadata.jsonl")
    assert (item.key, item.ref, item.reference) == ("x", {"path": "x.jpg"}, ["dog"])


def test_limit_and_lazy_reads(tmp_path: Path, open_src, make_image) -> None:
    for n in range(5):
        write(tmp_path / "d" / f"{n}.png", make_image())
    assert [i.key for i in open_src("folder", "d", limit=2)] == ["0", "1"]
    stream = iter(open_src("folder", "d"))
    assert next(stream).error is None
    (tmp_path / "d" / "1.png").unlink()  # bytes are read only when the item is reached
    assert next(stream).error == "missing"


def test_setup_errors(tmp_path: Path, open_src, make_image) -> None:
    with pytest.raises(UserError, match="not a folder"):
        open_src("folder", "nowhere")
    write(tmp_path / "d/a.jpg", make_image())
    with pytest.raises(UserError, match="not found"):
        open_src("folder", "d", metadata="labels.jsonl")
    (tmp_path / "d/metadata.jsonl").write_text('{"file_name": "a.jpg"}\n{"file_name": "a.jpg"}\n')
    with pytest.raises(UserError, match="twice"):
        list(open_src("folder", "d"))
