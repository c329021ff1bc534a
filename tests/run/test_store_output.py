"""Outputs in an object store (`--out s3://bucket/prefix`), against moto's S3 server on 127.0.0.1.

Each runner's output must equal a local build of the same images (keys, labels, scores, image bytes,
HF rows, file names), read back straight from the store by `datasets` and `webdataset`.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from run.test_resilience import comparable, labeled_folder

from builder.cli import main
from builder.storage import url_fs

N, PER_SHARD = 23, 4  # 6 shards, the last one short


@pytest.fixture
def recipe(tmp_path: Path, small_vocab_file: Path):
    folder = labeled_folder(tmp_path / "photos", N)

    def write(name: str, out: str, latency: float = 0.0) -> Path:
        data = {"name": "store", "source": {"kind": "folder", "path": str(folder)},
                "vocabulary": str(small_vocab_file),
                "engine": {"kind": "simulated", "concurrency": 4, "simulation": {"latency": latency}},
                "output": {"dir": out, "samples_per_shard": PER_SHARD}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def build(*args: str) -> str:
    result = CliRunner().invoke(main, ["build", *args, "--no-progress"])
    assert result.exit_code == 0, result.output
    return result.output


def download(url: str, dest: Path) -> Path:
    fs, root = url_fs(url)
    fs.invalidate_cache()
    fs.get(root, str(dest), recursive=True)
    return dest


def cache_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def names(folder: Path) -> list[str]:
    """Every file but the gallery's (a local view, kept out of a store as out of the Hub)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).parts[0] != "gallery")


@pytest.fixture
def local(recipe, tmp_path: Path) -> Path:
    """The same build on local disk, to compare with."""
    build(str(recipe("local", str(tmp_path / "local"))))
    return tmp_path / "local"


def test_one_process_build_into_s3_equals_the_local_build(recipe, local, s3_bucket, tmp_path, monkeypatch) -> None:
    url = f"{s3_bucket}/runs/one"
    output = build(str(recipe("s3", url)))
    assert f"output: {url}" in output and "shards 6" in output
    got = download(url, tmp_path / "got")
    assert comparable(got) == comparable(local)
    assert names(got) == names(local)  # the same objects: data/train-0000k-of-00006.parquet, index, card, ...
    assert (got / "contact_sheet.jpg").is_file() and not (got / "gallery").exists()
    for text in (got / "recipe.yaml", got / "manifest.json", got / "README.md", got / "stats.json"):
        body = text.read_text()
        assert "tagllm-store-" not in body, text.name  # nothing names the working folder
        assert str(tmp_path) not in body.replace("../", ""), text.name  # local paths only relative
        assert "testing" not in body, text.name  # no credential
    # read back straight from the store, the way users load it (offline mode guards the Hub, not this server)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    hf = datasets.load_dataset("parquet", data_files=f"{url}/data/*.parquet", split="train")
    assert sorted(hf["key"]) == sorted(r["key"] for r in comparable(local)["hf"])
    on_disk = datasets.load_dataset("parquet", data_files=str(local / "data" / "*.parquet"), split="train")
    assert hf.features == on_disk.features and hf.features["labels"].feature.num_classes > 0  # ClassLabel kept
    wds = datasets.load_dataset("webdataset", data_files=f"{url}/webdataset/*.tar", split="train")
    assert len(wds) == N and {row["json"]["key"] for row in wds} == set(comparable(local)["records"])
    again = build(str(recipe("s3", url)))
    assert "sent this run 0" in again and "6 kept from an earlier run" in again


def test_webdataset_library_reads_the_tars_from_the_store(recipe, local, s3_bucket) -> None:
    """webdataset streams an s3:// tar through a `pipe:` command, as its docs show for `aws s3 cp`."""
    import webdataset as wds

    url = f"{s3_bucket}/wds"
    build(str(recipe("s3", url)))
    cat = f"{sys.executable} -c 'import sys,fsspec; sys.stdout.buffer.write(fsspec.open(sys.argv[1]).open().read())'"
    samples = list(wds.WebDataset(f"pipe:{cat} {url}/webdataset/shard-00000.tar", shardshuffle=False))
    expected = comparable(local)["images"]
    assert len(samples) == PER_SHARD and all(s["jpg"] == expected[s["__key__"]] for s in samples)


def test_killed_build_into_s3_resumes_with_no_record_twice_or_missing(recipe, local, s3_bucket, tmp_path) -> None:
    url = f"{s3_bucket}/killed"
    path = recipe("killed", url, latency=0.02)
    fs, root = url_fs(url)
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", str(path), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    marks: list[str] = []
    while time.time() < deadline and proc.poll() is None and not marks:  # one shard committed, others under way
        fs.invalidate_cache()
        marks = fs.glob(f"{root}/index/*.stats.json")
        time.sleep(0.05)
    assert proc.poll() is None, f"the build ended before it could be killed: {proc.stderr.read().decode()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/stats.json")  # it was cut short
    resumed = build(str(path))
    assert "kept from an earlier run" in resumed and "(0 kept" not in resumed
    got = download(url, tmp_path / "got")
    assert comparable(got) == comparable(local)
    keys = [k for p in sorted((got / "index").glob("*.parquet")) for k in pq.read_table(p).column("key").to_pylist()]
    assert len(keys) == len(set(keys)) == N  # no record twice, none missing
    assert names(got) == names(local)


def test_parts_into_s3_then_finalize_equal_the_local_build(recipe, local, s3_bucket, tmp_path) -> None:
    url = f"{s3_bucket}/split"
    path = recipe("split", url)
    procs = [subprocess.Popen([sys.executable, "-m", "builder", "build", str(path), "--part", f"{i}/2",
                               "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]  # started together
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert f"tagllm finalize {url}" in out
    fs, root = url_fs(url)
    fs.invalidate_cache()
    assert len(fs.glob(f"{root}/index/*.stats.json")) == 6 and not fs.exists(f"{root}/README.md")
    assert fs.glob(f"{root}/caches/*.sqlite")  # each part's answers, one file per commit
    fin = CliRunner().invoke(main, ["finalize", url])
    assert fin.exit_code == 0, fin.output
    got = download(url, tmp_path / "got")
    assert comparable(got) == comparable(local)
    assert names(got) == sorted(names(local) + ["parts/part-00000-of-00002.json", "parts/part-00001-of-00002.json"])
    a, b = (json.loads((d / "stats.json").read_text()) for d in (got, local))
    for key in ("images", "ok", "failed", "requests", "sent", "label_counts"):
        assert a[key] == b[key], key
    assert json.loads((got / "manifest.json").read_text())["status"] == "complete"
    # every part's answers were folded into the one cache, and the part files removed
    assert not fs.glob(f"{root}/caches/*")
    assert cache_rows(got / "cache.sqlite") == cache_rows(local / "cache.sqlite") > 0


def test_store_errors_are_one_line_and_name_the_url(recipe, s3_bucket) -> None:
    missing = CliRunner().invoke(main, ["build", str(recipe("x", "s3://no-such-bucket-here/x")), "--no-progress"])
    assert missing.exit_code != 0
    assert "s3://no-such-bucket-here" in missing.output and "Traceback" not in missing.output
    fs, root = url_fs(f"{s3_bucket}/foreign")
    fs.pipe(f"{root}/notes.txt", b"someone else's")
    foreign = CliRunner().invoke(main, ["build", str(recipe("y", f"{s3_bucket}/foreign")), "--no-progress"])
    assert foreign.exit_code != 0 and "is not a tagllm output" in foreign.output, foreign.output
    assert fs.cat(f"{root}/notes.txt") == b"someone else's"


def test_gcs_source_and_output_equal_the_local_build(recipe, local, gcs_bucket, tmp_path) -> None:
    """gs:// through gcsfs, against a GCS emulator: images read from a bucket, the output written to one."""
    fs, root = url_fs(gcs_bucket)
    photos = tmp_path / "photos"
    fs.put([str(p) for p in sorted(photos.iterdir())], f"{root}/photos/")
    url = f"{gcs_bucket}/runs/one"
    output = build(str(recipe("gcs", url)), "--set", f"source.path={gcs_bucket}/photos")
    assert f"output: {url}" in output and "shards 6" in output
    got = download(url, tmp_path / "got")
    assert comparable(got) == comparable(local)
    assert names(got) == names(local)
    again = build(str(recipe("gcs", url)), "--set", f"source.path={gcs_bucket}/photos")
    assert "sent this run 0" in again and "6 kept from an earlier run" in again


@pytest.mark.parametrize("command", ["inspect", "eval", "relabel", "view"])
def test_commands_that_read_a_local_folder_say_so_for_a_url(command: str) -> None:
    result = CliRunner().invoke(main, [command, "s3://some-bucket/tagged/set"])
    assert result.exit_code != 0
    assert "s3://some-bucket/tagged/set: an object-store output; this command reads a local folder" in result.output
