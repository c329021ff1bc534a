"""Object-store sources (moto S3): a bucket copy reads exactly as the local folder or tars, shard by shard."""

from __future__ import annotations

import importlib
import inspect
import io
import json
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tinydata import SMALL_VOCAB, jpeg

from builder.errors import UserError
from builder.recipe.model import SourceSpec
from builder.recipe.vocab import Vocabulary
from builder.sources import Source, open_source


def store_fs() -> Any:
    """The cached s3fs filesystem the sources get (same options, so the same object)."""
    import fsspec

    return fsspec.filesystem("s3")


def upload(folder: Path, url: str) -> None:
    fs = store_fs()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.pipe(f"{url}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if path.name.endswith(".tgz") else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Record the path of every `name` call (open; _cat_file, the coroutine every object read ends in)."""
    fs, seen = store_fs(), []
    original = getattr(fs, name)

    def counted(path: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(path.rsplit("/", 1)[-1])
        return original(path, *args, **kwargs)

    async def counted_async(path: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(path.rsplit("/", 1)[-1])
        return await original(path, *args, **kwargs)

    monkeypatch.setattr(fs, name, counted_async if inspect.iscoroutinefunction(original) else counted)
    return seen


@pytest.fixture
def opener(tmp_path: Path) -> Callable[..., Source]:
    vocab = Vocabulary.model_validate(SMALL_VOCAB)

    def make(kind: str, path: str | Path, **fields: Any) -> Source:
        return open_source(SourceSpec(kind=kind, path=str(path), **fields), vocab, tmp_path)

    return make


@pytest.fixture
def photos(photo_folder: Path) -> Path:
    """The photo folder plus a nested image, a hidden one, a non-image and a listed file that is absent."""
    (photo_folder / "sub" / "deeper").mkdir(parents=True)
    (photo_folder / "sub" / "deeper" / "x.png").write_bytes(jpeg(40))
    (photo_folder / ".cache").mkdir()
    (photo_folder / ".cache" / "y.jpg").write_bytes(jpeg(41))
    (photo_folder / "notes.txt").write_text("not an image")
    with open(photo_folder / "metadata.jsonl", "a") as meta:
        meta.write(json.dumps({"file_name": "gone.jpg", "labels": ["cat"]}) + "\n")
    return photo_folder


def test_folder_from_the_store_equals_the_local_folder(photos: Path, s3_bucket: str, opener) -> None:
    upload(photos, f"{s3_bucket}/photos")
    local, remote = list(opener("folder", photos)), list(opener("folder", f"{s3_bucket}/photos/"))
    assert remote == local
    assert [i.key for i in remote][-3:] == ["img10", "img11", "sub_deeper_x"]
    assert next(i for i in remote if i.key == "gone").error == "missing"
    assert sum(i.reference is not None for i in remote) == 13


def test_folder_reads_one_object_per_item_and_shards_directly(photos: Path, s3_bucket: str, opener,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    upload(photos, f"{s3_bucket}/photos")
    source = opener("folder", f"{s3_bucket}/photos")
    full = list(source)
    reads = count_calls(monkeypatch, "_cat_file")
    assert list(source.shard(1, 5)) == full[5:10]
    assert sorted(reads) == [f"img{i:02d}.jpg" for i in range(4, 9)]  # fetched together, in any order  # 'gone.jpg' (listed, absent) sorts first
    assert source.shard_count(5) == 3


def test_folder_object_lost_or_refused_mid_stream_is_a_failed_item(photos: Path, s3_bucket: str, opener,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    upload(photos, f"{s3_bucket}/photos")
    source = opener("folder", f"{s3_bucket}/photos")
    assert source.size() == 14  # listed now; an object deleted after the listing is read later
    store_fs().rm(f"{s3_bucket}/photos/img03.jpg")
    original = store_fs()._cat_file

    async def refuse(path: str, *args: Any, **kwargs: Any) -> bytes:
        if path.endswith("img07.jpg"):
            raise PermissionError("Access Denied")
        return await original(path, *args, **kwargs)

    monkeypatch.setattr(store_fs(), "_cat_file", refuse)
    items = {i.key: i for i in source}
    assert (items["img03"].error, items["img03"].detail) == ("missing", "file not found: img03.jpg")
    assert (items["img07"].error, items["img07"].detail) == ("missing", "cannot read img07.jpg: Access Denied")
    assert sum(i.error is None for i in items.values()) == 11


@pytest.fixture
def tars(tmp_path: Path) -> Path:
    """Three shards (one gzipped) with samples of two members and a name repeated across shards."""
    folder = tmp_path / "tars"
    for n, name in enumerate(["train-000.tar", "train-001.tgz", "train-002.tar"]):
        members = []
        for k in range(3):
            members += [(f"s{n}{k}.jpg", jpeg(10 * n + k)), (f"s{n}{k}.json", json.dumps(["cat"]).encode())]
        members += [("same.png", jpeg(50 + n))]
        write_tar(folder / name, members)
    (folder / "readme.txt").write_text("not a shard")
    return folder


def test_webdataset_from_the_store_equals_local_tars(tars: Path, s3_bucket: str, opener) -> None:
    upload(tars, f"{s3_bucket}/shards")
    local = list(opener("webdataset", tars, label_column="json"))
    remote = list(opener("webdataset", f"{s3_bucket}/shards", label_column="json"))
    assert remote == local
    assert len(remote) == 12 and remote[3].key == "same" and remote[7].key == "train-001_same"
    assert {i.ref["tar"] for i in remote} == {"train-000.tar", "train-001.tgz", "train-002.tar"}
    one = list(opener("webdataset", f"{s3_bucket}/shards/train-002.tar", label_column="json"))
    assert [i.image for i in one] == [i.image for i in local[8:]]


def test_webdataset_brace_pattern_in_the_store(tars: Path, s3_bucket: str, opener) -> None:
    upload(tars, f"{s3_bucket}/shards")
    items = list(opener("webdataset", f"{s3_bucket}/shards/train-00{{0,2}}.tar"))
    assert [i.ref["tar"] for i in items] == ["train-000.tar"] * 4 + ["train-002.tar"] * 4
    with pytest.raises(UserError, match=r"1 shard\(s\) of .* not found, e.g. s3://.*/train-001.tar"):
        opener("webdataset", f"{s3_bucket}/shards/train-{{000..002}}.tar").shard_urls()  # 001 is a .tgz


def test_webdataset_shard_reads_only_its_tars(tars: Path, s3_bucket: str, opener,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    upload(tars, f"{s3_bucket}/shards")
    source = opener("webdataset", f"{s3_bucket}/shards")
    full = list(source)
    assert source.size() == 12  # the plan: tar headers of every shard
    opened = count_calls(monkeypatch, "get_file")  # each tar is downloaded while the one before it is read
    assert list(source.shard(1, 3)) == full[3:6]
    assert opened == ["train-000.tar", "train-001.tgz"]
    opened.clear()
    assert list(source.shard(3, 3)) == full[9:]
    assert opened == ["train-002.tar"]


def test_store_errors_are_one_line_naming_the_url(tars: Path, photos: Path, s3_bucket: str, opener,
                                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    upload(tars, f"{s3_bucket}/shards")
    (tmp_path / "x.json").write_text("{}")  # coco's annotations, so that its path check is reached
    store_fs().pipe(f"{s3_bucket}/broken/x.tar", b"this is not a tar archive" * 40)
    cases = [
        ("folder", "s3://no-such-bucket-here/photos", r"source.path: s3://no-such-bucket-here/photos: not found"),
        ("folder", f"{s3_bucket}/absent", r"not found"),
        ("folder", f"{s3_bucket}/shards", rf"no images under {s3_bucket}/shards"),
        ("webdataset", "s3://no-such-bucket-here/shards", "s3://no-such-bucket-here/shards: not found"),
        ("webdataset", f"{s3_bucket}/absent/", "not found"),
        ("webdataset", f"{s3_bucket}/broken/x.tar", rf"cannot read WebDataset shard {s3_bucket}/broken/x.tar"),
        ("coco", f"{s3_bucket}/shards", "kind coco reads local files only"),
        ("voc", f"{s3_bucket}/shards", "kind voc reads local files only"),
        ("nuswide", f"{s3_bucket}/shards", "kind nuswide reads local files only"),
    ]
    upload(photos, f"{s3_bucket}/photos")
    cases.append(("webdataset", f"{s3_bucket}/photos", rf"no \.tar shards in {s3_bucket}/photos"))
    for kind, url, message in cases:
        with pytest.raises(UserError, match=message) as caught:
            list(opener(kind, url, annotations="x.json"))
        assert "\n" not in str(caught.value)

    def deny(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("Access Denied")

    for name in ("info", "ls", "isdir"):
        monkeypatch.setattr(store_fs(), name, deny)
    for kind in ("folder", "webdataset"):
        with pytest.raises(UserError, match=rf"{s3_bucket}/photos: access denied \(Access Denied\)"):
            list(opener(kind, f"{s3_bucket}/photos"))


@pytest.mark.parametrize(("scheme", "package"), [("s3", "s3fs"), ("gs", "gcsfs")])
def test_missing_store_package_names_it(scheme: str, package: str, opener, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = importlib.import_module("fsspec.registry")._registry  # the classes imported so far
    for name in (scheme, f"{scheme}a", "gcs"):
        monkeypatch.delitem(registry, name, raising=False)
    monkeypatch.setitem(sys.modules, package, None)  # import fails as when it is not installed
    for kind in ("folder", "webdataset"):
        with pytest.raises(UserError, match=rf"{scheme}://b/p: reading {scheme}:// needs {package}: pip install"):
            list(opener(kind, f"{scheme}://b/p"))


def test_build_from_the_store_equals_the_build_from_disk(photo_folder: Path, s3_bucket: str, write_recipe,
                                                         tmp_path: Path) -> None:
    from builder.cli import main

    upload(photo_folder, f"{s3_bucket}/photos")
    tables = []
    for name, path in (("local", str(photo_folder)), ("store", f"{s3_bucket}/photos")):
        recipe = write_recipe(f"{name}.yaml", source={"kind": "folder", "path": path})
        out = tmp_path / f"out-{name}"
        result = CliRunner().invoke(main, ["build", str(recipe), "--out", str(out), "--no-progress"])
        assert result.exit_code == 0, result.output
        tables.append([row for shard in sorted((out / "index").glob("shard-*.parquet"))
                       for row in pq.read_table(shard, columns=["key", "status", "labels", "scores", "source"])
                       .to_pylist()])
        saved = (out / "recipe.yaml").read_text()
    assert tables[0] == tables[1] and len(tables[0]) == 12
    assert {row["status"] for row in tables[0]} == {"ok"} and any(row["labels"] != "[]" for row in tables[0])
    assert f"path: {s3_bucket}/photos" in saved


def test_folder_fetch_that_fails_as_a_whole_reads_each_object_on_its_own(photos: Path, s3_bucket: str, opener,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    upload(photos, f"{s3_bucket}/photos")
    expected = [(i.key, i.image, i.error) for i in opener("folder", photos)]

    def broken_batch(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the batch request was cut")

    monkeypatch.setattr(store_fs(), "cat", broken_batch)
    assert [(i.key, i.image, i.error) for i in opener("folder", f"{s3_bucket}/photos")] == expected
