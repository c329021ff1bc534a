"""End to end: recipe -> simulated engine -> shards and HF dataset, read back by real clients."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from builder.cli import main
from builder.publish import layout

REPO = Path(__file__).resolve().parents[2]


def card_header(out: Path) -> dict:
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def built(build, tmp_path):
    result = build()
    return result


def test_every_item_gives_exactly_one_record(built, photo_folder):
    out = built.out
    records = list(layout.iter_records(out))
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys)) == 12
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images"] == 12 == stats["ok"] + stats["failed"]
    assert built.shards == 3  # 12 items, 5 per shard
    shard_sum = sum(json.loads(layout.shard_stats_path(out, s).read_text())["images"] for s in range(3))
    assert shard_sum == 12


def test_webdataset_shards_read_back(built, photo_folder):
    import webdataset as wds

    urls = [str(p) for p in sorted((built.out / "webdataset").glob("shard-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 12
    for sample in samples:
        record = json.loads(sample["json"])
        assert record["key"] == sample["__key__"]
        original = (photo_folder / record["source"]["path"]).read_bytes()
        assert sample["jpg"] == original  # stored untouched, not re-encoded
        Image.open(io.BytesIO(sample["jpg"])).load()
        assert set(record["labels"]) <= set(record["candidates"])
        assert len(record["scores"]) == len(record["candidates"])  # aligned list: one shape for every sample
        assert all(0.0 <= s <= 1.0 for s in record["scores"])
        assert record["simulated"] is True


def test_hf_dataset_loads_with_classlabels(built):
    from datasets import ClassLabel, load_dataset

    ds = load_dataset(str(built.out), split="train", cache_dir=str(built.out.parent / "hf-cache"))
    assert ds.num_rows == 12
    feature = ds.features["labels"].feature
    assert isinstance(feature, ClassLabel)
    assert feature.names == ["cat", "dog", "bird", "car", "bus", "apple", "hot dog"]
    records = {r.key: r for r in layout.iter_records(built.out)}
    for row in ds:
        assert [feature.int2str(i) for i in row["labels"]] == records[row["key"]].labels
        assert row["image"].size == (96, 64)
    assert sorted((built.out / "data").iterdir())[0].name == "train-00000-of-00003.parquet"


def test_dataloader_yields_multi_hot(built):
    torch = pytest.importorskip("torch")
    from datasets import load_dataset

    ds = load_dataset(str(built.out), split="train", cache_dir=str(built.out.parent / "hf-cache"))
    n = len(ds.features["labels"].feature.names)

    def collate(rows):
        target = torch.zeros(len(rows), n)
        for i, row in enumerate(rows):
            target[i, row["labels"]] = 1.0
        return target

    batches = list(torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate))
    assert [b.shape for b in batches] == [(5, n), (5, n), (2, n)]
    total = sum(b.sum().item() for b in batches)
    assert total == sum(len(r.labels) for r in layout.iter_records(built.out))


def test_card_header_and_simulated_notice(built):
    header = card_header(built.out)
    assert header["task_categories"] == ["image-classification"]
    assert header["task_ids"] == ["multi-label-image-classification"]
    assert header["size_categories"] == ["n<1K"]
    assert header["annotations_creators"] == ["other"]  # simulated labels are not model output
    assert "simulated-labels" in header["tags"]
    assert header["configs"][0]["data_files"][0]["path"] == "data/train-*"
    body = (built.out / "README.md").read_text()
    assert "SIMULATED LABELS" in body
    assert "tagllm build recipe.yaml" in body
    assert "| cat | animal |" in body
    assert (built.out / "recipe.yaml").is_file()


def test_index_keeps_raw_answers(built):
    table = pq.read_table(layout.index_path(built.out, 0))
    raw = json.loads(table.column("raw")[0].as_py())
    assert raw and {"tag", "text"} <= set(raw[0])
    assert any(r["tag"].startswith("subset:") for r in raw)


def test_bundled_demo_reads_back_with_real_clients(tmp_path):
    """The demo as `make demo` builds it, read by webdataset, datasets and a torch DataLoader."""
    torch = pytest.importorskip("torch")
    import webdataset as wds
    from datasets import load_dataset

    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["build", str(REPO / "recipes/demo.yaml"), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    images = REPO / "recipes/demo"
    tars = [str(p) for p in sorted((out / "webdataset").glob("*.tar"))]
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("pil"))
    assert len(samples) == len((images / "metadata.jsonl").read_text().splitlines())
    for sample in samples:
        record = sample["json"]
        assert sample["jpg"].size == (record["width"], record["height"])
        assert record["status"] == "ok" and record["simulated"] is True
    raw = next(iter(wds.WebDataset(tars[0], shardshuffle=False)))
    assert raw["jpg"] == (images / "images" / json.loads(raw["json"])["source"]["path"]).read_bytes()
    ds = load_dataset(str(out), split="train", cache_dir=str(out.parent / "hf-cache")).with_format("torch", columns=["labels"], output_all_columns=True)
    names = ds.features["labels"].feature.names
    assert len(names) == 80 and names[0] == "person"

    def multi_hot(rows):
        target = torch.zeros(len(rows), len(names))
        for i, row in enumerate(rows):
            target[i, row["labels"]] = 1.0
        return target

    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=multi_hot)))
    assert batch.shape == (8, 80) and set(batch.unique().tolist()) <= {0.0, 1.0}


def test_cli_builds_the_bundled_demo(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["build", str(REPO / "recipes/demo.yaml"), "--out", str(out),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "SIMULATED" in result.output
    stats = json.loads((out / "stats.json").read_text())
    lines = (REPO / "recipes/demo/metadata.jsonl").read_text().splitlines()
    assert stats["images"] == len(lines) == stats["ok"] + stats["failed"]
    assert stats["with_reference"] == len(lines)
    inspect = CliRunner().invoke(main, ["inspect", str(out)])
    assert inspect.exit_code == 0 and "SIMULATED" in inspect.output
    # The build handed its recipe and stats to the card; read back from the folder they give the same card.
    from builder.publish.card import render_card

    assert "Concept sheet: `concepts.yaml`" in render_card(out)
    assert render_card(out) == (out / "README.md").read_text()


def test_unknown_recipe_field_fails_with_one_line(write_recipe, tmp_path):
    recipe = write_recipe(engine={"kind": "simulated", "concurency": 3})
    result = CliRunner().invoke(main, ["build", str(recipe)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {recipe}: engine.concurency: unknown field (did you mean 'concurrency'?)"]
    assert not (tmp_path / "out").exists()


def test_set_overrides_any_field(build, write_recipe):
    result = build(overrides=["tagging.threshold=1.0", "output.formats=[webdataset]"])
    records = list(layout.iter_records(result.out))
    assert all(r.labels == [] for r in records)  # no score reaches 1.0
    assert not (result.out / "data").exists()
