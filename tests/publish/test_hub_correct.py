"""Issue 13: what gets published is right for the Hub (card, snippets, shards, messages)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from builder.cli import main
from builder.errors import RunError, UserError
from builder.images import ImageProblem, prepare_image
from builder.publish import layout
from builder.publish.hub import push
from builder.publish.writers.webdataset import member_key

# `load_dataset(".")` fails under datasets 5 when the card declares `configs` (no dataset name): the
# local card loads the parquet files by name instead (tests/publish/test_card_snippets.py runs it).
LOCAL_LOAD = 'load_dataset("parquet", data_files={"train": "data/train-*.parquet"}, split="train")'


def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (seed * 20 % 256, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def mixed_folder(photo_folder: Path) -> Path:
    """The photo folder with PNGs after the JPEGs (and one PNG misnamed .jpg)."""
    with open(photo_folder / "metadata.jsonl", "a") as meta:
        for i in range(4):
            (photo_folder / f"zz{i}.png").write_bytes(png_bytes(i))
            meta.write(json.dumps({"file_name": f"zz{i}.png", "labels": ["cat", "bus"]}) + "\n")
        (photo_folder / "zz_misnamed.jpg").write_bytes(png_bytes(9))
        meta.write(json.dumps({"file_name": "zz_misnamed.jpg", "labels": ["dog"]}) + "\n")
    return photo_folder


def test_datasets_webdataset_loader_reads_every_image_and_score(build, write_recipe, mixed_folder, tmp_path):
    from datasets import load_dataset

    out = build(write_recipe(output={"samples_per_shard": 100})).out
    ds = load_dataset("webdataset", data_files={"train": str(out / "webdataset" / "*.tar")}, split="train",
                      cache_dir=str(tmp_path / "hf-cache"))
    assert len(ds) == 17 and set(ds.column_names) >= {"jpg", "json"}
    assert all(row["jpg"] is not None for row in ds)  # PNGs after JPEGs are not dropped
    records = {row["json"]["key"]: row["json"] for row in ds}
    assert records["zz0"]["ext"] == "png" and records["zz_misnamed"]["ext"] == "png"  # sniffed format
    for record in records.values():
        assert len(record["scores"]) == len(record["candidates"])  # one shape, no per-label struct


def test_card_snippets_and_notes(build, write_recipe, monkeypatch):
    out = build(write_recipe()).out
    card = (out / layout.CARD).read_text()
    assert LOCAL_LOAD in card and 'wds.WebDataset("webdataset/shard-' in card
    assert "pip install tagllm\n" not in card and "@ git+https://github.com/tagllm/tagllm" in card
    assert "--gpu-price" not in card and "--human-price" not in card and "80-label" not in card
    stats = json.loads((out / layout.STATS).read_text())
    assert "--gpu-price" not in json.dumps(stats) and "80-label vocabulary" not in json.dumps(stats)

    class Api:
        def create_repo(self, **kwargs):
            pass

        def upload_folder(self, **kwargs):
            return type("Commit", (), {"commit_url": "https://huggingface.co/datasets/me/tags/commit/1"})()

    push(out, "me/tags", allow_simulated=True, api=Api())
    card = (out / layout.CARD).read_text()
    assert 'load_dataset("me/tags", split="train")' in card
    assert "https://huggingface.co/datasets/me/tags/resolve/main/webdataset/shard-" in card
    assert "hf://datasets/me/tags/webdataset/*.tar" in card
    assert str(out.resolve()) not in card


def test_push_without_token_or_network_says_which(build, write_recipe, monkeypatch):
    out = build(write_recipe()).out
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(UserError, match="no Hugging Face token: set HF_TOKEN or run `hf auth login`"):
        push(out, "me/tags", allow_simulated=True)

    class Offline:
        def create_repo(self, **kwargs):
            import httpx

            raise httpx.ConnectError("[Errno -2] Name or service not known")

    with pytest.raises(RunError, match="cannot reach the Hub"):
        push(out, "me/tags", allow_simulated=True, api=Offline())
    assert LOCAL_LOAD in (out / layout.CARD).read_text()  # not pushed: local card
    help_text = CliRunner().invoke(main, ["push", "--help"]).output
    assert "hf auth login" in help_text and "huggingface-cli" not in help_text


def test_relabel_recomputes_the_card_evaluation(build, write_recipe):
    pytest.importorskip("sklearn")
    from builder.analysis.evaluate import run_eval

    out = build(write_recipe()).out
    run_eval(out, plots=False)
    before = json.loads((out / "eval" / "report.json").read_text())["overall"]
    result = CliRunner().invoke(main, ["relabel", str(out), "--threshold", "0.99"])
    assert result.exit_code == 0 and "evaluation recomputed" in result.output
    after = json.loads((out / "eval" / "report.json").read_text())["overall"]
    assert after != before
    card = (out / layout.CARD).read_text()
    assert f"| {100 * after['CP']:.1f} |" in card


def test_stale_evaluation_is_removed_from_the_card(build, write_recipe):
    pytest.importorskip("sklearn")
    from builder.analysis.evaluate import run_eval

    out = build(write_recipe()).out
    run_eval(out, thresholds=0.3, plots=False)  # not 'labels as built': cannot be redone by relabel
    CliRunner().invoke(main, ["card", str(out)])
    assert "## Evaluation against human labels" in (out / layout.CARD).read_text()
    result = CliRunner().invoke(main, ["relabel", str(out), "--threshold", "0.8"])
    assert result.exit_code == 0 and "evaluation retired" in result.output
    assert not (out / "eval" / "report.json").exists()
    assert "## Evaluation against human labels" not in (out / layout.CARD).read_text()


def test_tar_member_names_are_safe(build, write_recipe, photo_folder):
    assert member_key("img_01") == "img_01"
    for bad in ("-rf", "a\tb", "a\nb", "x.y", "\x7f"):
        key = member_key(bad)
        assert not key.startswith("-") and not any(c in key for c in "\t\n.\x7f/")
    assert member_key("a\tb") != member_key("a\nb")
    for name in ("-lead.jpg", "tab\there.jpg"):
        (photo_folder / name).write_bytes((photo_folder / "img00.jpg").read_bytes())
    out = build(write_recipe(output={"samples_per_shard": 100})).out
    with tarfile.open(out / "webdataset" / "shard-00000.tar") as tar:
        names = tar.getnames()
    assert len(names) == 28 and not any(n.startswith("-") or "\t" in n for n in names)


def test_decode_errors_hold_no_memory_address():
    with pytest.raises(ImageProblem) as info:
        prepare_image(b"definitely not an image", 10**6, 10**8)
    assert "0x" not in info.value.detail and "object at" not in info.value.detail
