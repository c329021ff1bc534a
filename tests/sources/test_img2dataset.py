"""img2dataset source: every parquet row an item, failures recorded with img2dataset's reasons, shards, builds.

The fixture folder has the layout `img2dataset --output_format webdataset` 1.47 writes (checked against a
real run): NNNNN.tar with {key}.jpg/.txt/.json per success, NNNNN.parquet with one row per url of the shard
in the order img2dataset wrote them (not key order), NNNNN_stats.json.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tinydata import jpeg

from builder.errors import UserError

PARQUET_SCHEMA = pa.schema([
    ("caption", pa.string()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
    ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()), ("exif", pa.string()), ("sha256", pa.string()),
])
FAILED = {"404": ("failed_to_download", "HTTP Error 404: Not Found"), "slow": ("failed_to_download", "timed out"),
          "broken": ("failed_to_resize", "Image decoding error")}
# shard -> rows in parquet order: (key, what); "ok" is served and in the tar, "lost" is a success without tar member
SHARDS = {
    "00000": [("000000", "ok"), ("000002", "404"), ("000001", "ok"), ("000003", "lost"), ("000004", "slow")],
    "00001": [("000010", "broken"), ("000011", "ok"), ("000013", "404"), ("000012", "ok")],
    "00002": [("000021", "ok"), ("000020", "slow")],
}
ORDER = [key for rows in SHARDS.values() for key, _ in rows]


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_img2dataset(folder: Path, shards: dict[str, list[tuple[str, str]]]) -> dict[str, dict[str, Any]]:
    """Write img2dataset's webdataset output; returns key -> what was written about it (for the asserts)."""
    folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict[str, Any]] = {}
    for stem, rows in shards.items():
        table, counts = [], {"count": len(rows), "successes": 0, "failed_to_download": 0, "failed_to_resize": 0}
        with tarfile.open(folder / f"{stem}.tar", "w") as tar:
            for key, what in rows:
                n = int(key)
                size = (40 + n, 30 + n % 7)
                row = {"caption": f"a photo n°{n}", "url": f"http://example.test/{what}/{n}.jpg", "key": key,
                       "status": "success", "error_message": None, "width": size[0], "height": size[1],
                       "original_width": size[0], "original_height": size[1], "exif": "{}", "sha256": f"h{n}"}
                if what in FAILED:
                    row.update(status=FAILED[what][0], error_message=FAILED[what][1], width=None, height=None,
                               original_width=None, original_height=None, exif=None, sha256=None)
                    counts[row["status"]] += 1
                else:
                    counts["successes"] += 1
                image = jpeg(n, size)
                if what == "ok":
                    add(tar, f"{key}.jpg", image)
                    add(tar, f"{key}.txt", row["caption"].encode())
                    add(tar, f"{key}.json", json.dumps(row, indent=4).encode())
                table.append(row)
                truth[key] = dict(row, image=image if what == "ok" else None, what=what)
        pq.write_table(pa.Table.from_pylist(table, schema=PARQUET_SCHEMA), folder / f"{stem}.parquet")
        (folder / f"{stem}_stats.json").write_text(json.dumps(counts, indent=4))
    return truth


@pytest.fixture
def i2d(tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    folder = tmp_path / "i2d"
    return folder, write_img2dataset(folder, SHARDS)


def test_every_parquet_row_is_an_item_in_shard_then_row_order(i2d, open_src) -> None:
    folder, truth = i2d
    src = open_src("img2dataset", folder)
    items = list(src)
    assert [i.key for i in items] == ORDER and src.size() == len(ORDER) == 11
    for item in items:
        t = truth[item.key]
        assert (item.caption, item.url) == (t["caption"], t["url"])
        assert (item.original_width, item.original_height) == (t["original_width"], t["original_height"])
        assert item.reference is None  # img2dataset has no human labels
        if t["what"] == "ok":
            assert (item.error, item.image, item.ext) == (None, t["image"], "jpg")
            assert item.ref["member"] == f"{item.key}.jpg"
    by_key = {i.key: i for i in items}
    assert (by_key["000002"].error, by_key["000002"].image) == ("download", None)
    assert by_key["000002"].detail == "img2dataset failed_to_download: HTTP Error 404: Not Found"
    assert by_key["000004"].error == "download" and "timed out" in by_key["000004"].detail
    assert by_key["000010"].error == "resize" and "Image decoding error" in by_key["000010"].detail
    lost = by_key["000003"]
    assert (lost.error, lost.image) == ("missing", None)
    assert "'000003' as a success but 00000.tar holds no sample" in lost.detail
    assert lost.url == truth["000003"]["url"] and lost.original_width == truth["000003"]["original_width"]
    assert by_key["000013"].ref == {"tar": "00001.tar", "member": None, "parquet": "00001.parquet", "row": 2}


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 11, 20])
def test_shard_k_is_the_full_read_at_those_positions(i2d, open_src, size: int) -> None:
    folder, _ = i2d
    src = open_src("img2dataset", folder)
    full = [(i.key, i.image, i.error, i.caption) for i in src]
    for k in range(src.shard_count(size)):
        got = [(i.key, i.image, i.error, i.caption) for i in src.shard(k, size)]
        assert got == full[k * size:(k + 1) * size]


def test_a_shard_opens_only_the_tars_it_needs(i2d, open_src, monkeypatch) -> None:
    from builder.sources.img2dataset import Img2DatasetSource

    folder, _ = i2d
    opened: list[str] = []
    real = Img2DatasetSource._open
    monkeypatch.setattr(Img2DatasetSource, "_open", lambda self, path: opened.append(Path(path).name) or real(self, path))
    src = open_src("img2dataset", folder)
    src.size()
    assert all(name.endswith(".parquet") for name in opened)  # counting and keys come from the parquets
    opened.clear()
    assert [i.key for i in src.shard(3, 3)] == ["000021", "000020"]
    assert [n for n in opened if n.endswith(".tar")] == ["00002.tar"]


def test_without_parquet_the_tars_alone_are_read(i2d, open_src) -> None:
    folder, truth = i2d
    for p in folder.glob("*.parquet"):
        p.unlink()
    src = open_src("img2dataset", folder)
    items = list(src)
    assert [i.key for i in items] == [k for k in ORDER if truth[k]["what"] == "ok"] == [i.key for i in src.shard(0, 50)]
    assert src.size() == 5
    for item in items:
        t = truth[item.key]
        assert (item.error, item.image, item.caption, item.url) == (None, t["image"], t["caption"], t["url"])
        assert (item.original_width, item.original_height) == (t["original_width"], t["original_height"])
    assert [i.key for i in src.shard(2, 2)] == [items[4].key]


def test_a_truncated_tar_fails_its_success_rows_not_the_run(i2d, open_src) -> None:
    folder, truth = i2d
    tar = folder / "00001.tar"
    tar.write_bytes(tar.read_bytes()[:1500])  # ends inside the first image
    items = {i.key: i for i in open_src("img2dataset", folder)}
    assert len(items) == 11
    for key in ("000011", "000012"):
        assert items[key].error == "missing" and "cannot read 00001.tar" in items[key].detail
    assert items["000010"].error == "resize" and items["000013"].error == "download"
    assert items["000021"].image == truth["000021"]["image"]  # the other shards are untouched


def test_a_parquet_without_its_tar(i2d, open_src) -> None:
    folder, _ = i2d
    (folder / "00002.tar").unlink()
    items = {i.key: i for i in open_src("img2dataset", folder)}
    assert items["000021"].error == "missing" and "00002.tar does not exist" in items["000021"].detail
    assert items["000020"].error == "download"


def test_folders_that_are_not_img2dataset_output(tmp_path: Path, open_src) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no img2dataset shards"):
        open_src("img2dataset", "empty").size()
    with pytest.raises(UserError, match="not an img2dataset output folder"):
        list(open_src("img2dataset", "nowhere"))


def test_an_object_store_folder_reads_as_the_local_one(i2d, open_src, s3_bucket: str) -> None:
    import s3fs

    folder, _ = i2d
    s3fs.S3FileSystem().put(str(folder) + "/", f"{s3_bucket}/crawl/", recursive=True)
    remote = open_src("img2dataset", f"{s3_bucket}/crawl")
    local = open_src("img2dataset", folder)
    assert [(i.key, i.image, i.error, i.url) for i in remote] == [(i.key, i.image, i.error, i.url) for i in local]
    assert [i.key for i in remote.shard(1, 5)] == ORDER[5:10]


def test_a_build_records_every_row_with_caption_url_and_size(i2d, write_recipe, tmp_path: Path) -> None:
    from datasets import load_dataset

    from builder.cli import main
    from builder.publish import layout

    folder, truth = i2d
    engine = {"simulation": {"allow_unlabeled": True}}
    # a crawl's dead links are many: more than the default half may fail; failed rows go to the data too
    output = {"max_failed_fraction": 0.9, "include_failed": True}
    recipe = write_recipe(source={"kind": "img2dataset", "path": str(folder)}, engine=engine, output=output)
    result = CliRunner().invoke(main, ["build", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["images"], stats["ok"], stats["failed"]) == (11, 5, 6)
    assert stats["failed_by_reason"] == {"download": 4, "resize": 1, "missing": 1}
    records = list(layout.iter_records(out))
    assert [r.key for r in records] == ORDER
    for r in records:
        t = truth[r.key]
        assert (r.caption, r.url, r.original_width, r.original_height) == (
            t["caption"], t["url"], t["original_width"], t["original_height"])
        assert r.status == ("ok" if t["what"] == "ok" else "failed")
    hf = load_dataset("parquet", data_files=sorted(str(p) for p in (out / "data").glob("*.parquet")),
                      split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert {"caption", "url", "original_width", "original_height"} <= set(hf.features)
    rows = {row["key"]: row for row in hf}
    assert len(rows) == 11 and rows["000011"]["url"] == truth["000011"]["url"]
    assert rows["000013"]["caption"] == truth["000013"]["caption"] and rows["000013"]["image"] is None
    assert rows["000001"]["original_height"] == truth["000001"]["original_height"]
    samples = {}
    for tar_path in sorted((out / "webdataset").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    sample = json.loads(tar.extractfile(m).read())
                    samples[sample["key"]] = sample
                elif m.name.endswith(".jpg"):
                    assert tar.extractfile(m).read() == truth[m.name.split(".")[0]]["image"]
    assert samples["000021"]["caption"] == truth["000021"]["caption"]
    assert samples["000021"]["original_width"] == truth["000021"]["original_width"]


def test_a_simulated_build_needs_allow_unlabeled(i2d, build, write_recipe) -> None:
    folder, _ = i2d
    with pytest.raises(UserError, match="has none"):
        build(write_recipe(source={"kind": "img2dataset", "path": str(folder)}))


def test_credentials_in_a_url_are_not_kept(tmp_path: Path, open_src) -> None:
    """A url list may carry user:password@ (img2dataset keeps it as given); the published record must not."""
    folder = tmp_path / "secret"
    write_img2dataset(folder, {"00000": [("000000", "ok"), ("000001", "404")]})
    table = pq.read_table(folder / "00000.parquet").to_pylist()
    for row in table:
        row["url"] = row["url"].replace("http://", "http://user:hunter2@")
    pq.write_table(pa.Table.from_pylist(table, schema=PARQUET_SCHEMA), folder / "00000.parquet")
    with tarfile.open(folder / "00000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    meta = json.loads(members["000000.json"])
    members["000000.json"] = json.dumps({**meta, "url": table[0]["url"]}).encode()
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for name, data in members.items():
            add(tar, name, data)
    items = list(open_src("img2dataset", folder))
    assert [i.url for i in items] == ["http://example.test/ok/0.jpg", "http://example.test/404/1.jpg"]
