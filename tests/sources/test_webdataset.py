"""WebDataset reader: tar, folder and brace inputs, raw member bytes, label members, recorded failures."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from builder.errors import UserError


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path: Path, make_image) -> dict[str, bytes]:
    """Two shards; returns member name -> bytes of the images."""
    imgs = {
        "dir/a.jpg": make_image("red", "JPEG"),
        "c.v2.png": make_image("blue"),
        "e.webp": make_image("green", "WEBP"),
        "f.jpg": make_image("white", "JPEG"),
        "f.png": make_image("black"),
    }
    write_tar(
        tmp_path / "wds" / "part-000.tar",
        [
            ("dir/a.jpg", imgs["dir/a.jpg"]),
            ("dir/a.json", json.dumps({"labels": ["kitten", "car"]}).encode()),
            ("b.json", json.dumps({"labels": ["dog"]}).encode()),
            ("c.v2.png", imgs["c.v2.png"]),
            ("c.v2.json", b'["unicorn"]'),
        ],
    )
    write_tar(
        tmp_path / "wds" / "part-001.tar",
        [
            ("e.webp", imgs["e.webp"]),
            ("e.json", b'{"labels": "dog; car"}'),
            ("f.jpg", imgs["f.jpg"]),
            ("f.png", imgs["f.png"]),
            ("f.json", b'{"labels": []}'),
            ("g.jpg", b""),
        ],
    )
    return imgs


def test_folder_of_tars_keys_refs_bytes_labels(shards: dict[str, bytes], open_src) -> None:
    items = list(open_src("webdataset", "wds", label_column="json"))
    assert [i.key for i in items] == ["dir_a", "b", "c", "e", "f", "g"]
    a, b, c, e, f, g = items
    assert a.image == shards["dir/a.jpg"] and a.ext == "jpg" and a.reference == ["cat", "car"]
    assert a.ref == {"tar": "part-000.tar", "member": "dir/a.jpg"}
    assert (b.image, b.error, b.reference) == (None, "missing", ["dog"])  # no image member: recorded
    assert c.error == "source" and "unicorn" in c.detail and c.image == shards["c.v2.png"]
    assert c.ref["member"] == "c.v2.png" and c.ext == "png"
    assert e.reference == ["dog", "car"] and e.image == shards["e.webp"]
    assert f.image == shards["f.jpg"] and f.reference == []  # first image member wins by default
    assert (g.error, g.image, g.reference) == ("empty", None, None)  # no label member: unlabeled


def test_single_tar_brace_pattern_and_folder_agree(shards: dict[str, bytes], open_src) -> None:
    one = [i.key for i in open_src("webdataset", "wds/part-000.tar")]
    assert one == ["dir_a", "b", "c"]
    braces = [(i.key, i.image) for i in open_src("webdataset", "wds/part-{000..001}.tar")]
    folder = [(i.key, i.image) for i in open_src("webdataset", "wds")]
    assert braces == folder and len(folder) == 6


def test_image_column_picks_the_extension(shards: dict[str, bytes], open_src) -> None:
    items = {i.key: i for i in open_src("webdataset", "wds/part-001.tar", image_column="png")}
    assert items["f"].image == shards["f.png"] and items["f"].ext == "png"
    assert items["e"].image == shards["e.webp"]  # no png member: falls back to the first image


def test_text_labels_label_map_and_limit(tmp_path: Path, make_image, open_src) -> None:
    write_tar(
        tmp_path / "t.tar",
        [
            ("x.jpg", make_image()),
            ("x.cls", b"pet\nautomobile, frankfurter\n"),
            ("y.jpg", make_image()),
            ("y.cls", b"bird"),
        ],
    )
    items = list(open_src("webdataset", "t.tar", label_column="cls", label_map={"pet": "dog", "bird": None}))
    assert [i.reference for i in items] == [["dog", "car", "hot dog"], []]
    assert len(list(open_src("webdataset", "t.tar", limit=1))) == 1


def test_duplicate_keys_across_shards_stay_unique(tmp_path: Path, make_image, open_src) -> None:
    write_tar(tmp_path / "d" / "s0.tar", [("k.jpg", make_image("red"))])
    write_tar(tmp_path / "d" / "s1.tar", [("k.jpg", make_image("blue"))])
    assert [i.key for i in open_src("webdataset", "d")] == ["k", "s1_k"]


def test_bad_inputs(tmp_path: Path, open_src) -> None:
    with pytest.raises(UserError, match="no such tar"):
        open_src("webdataset", "missing.tar").shard_urls()
    write_tar(tmp_path / "part-0.tar", [])
    with pytest.raises(UserError, match="1 shard"):
        open_src("webdataset", "part-{0..1}.tar").shard_urls()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no \.tar shards"):
        list(open_src("webdataset", "empty"))
    (tmp_path / "broken.tar").write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(UserError, match="cannot read"):
        list(open_src("webdataset", "broken.tar"))
