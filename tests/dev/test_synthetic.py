"""Synthetic scenes: seeded, labels true to the pixels, and a recipe the real build accepts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from builder.dev.synthetic import (
    COLORS,
    SHAPES,
    make_scene,
    make_synthetic,
    png_bytes,
    synthetic_vocabulary,
    write_output,
)
from builder.publish import layout
from builder.recipe.model import load_recipe
from builder.records import Record


def test_vocabulary_groups_by_shape() -> None:
    vocab = synthetic_vocabulary()
    assert 8 <= len(vocab.names) <= 20
    assert [g.name for g in vocab.groups] == list(SHAPES)
    assert vocab.group_of("red circle") == "circle"
    assert vocab.resolve("Blue Squares") == "blue square"


def test_seeded_and_split(tmp_path: Path) -> None:
    a = make_synthetic(tmp_path / "a", n=12, n_test=4, seed=5)
    b = make_synthetic(tmp_path / "b", n=12, n_test=4, seed=5)
    c = make_synthetic(tmp_path / "c", n=12, n_test=4, seed=6)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*.png"))
    assert len(files) == 16
    assert all((a.root / f).read_bytes() == (b.root / f).read_bytes() for f in files)
    assert (a.train / "metadata.jsonl").read_text() == (b.train / "metadata.jsonl").read_text()
    assert (a.train / "metadata.jsonl").read_text() != (c.train / "metadata.jsonl").read_text()
    # the test split is not a copy of the train split
    assert (a.train / "images/00000.png").read_bytes() != (a.test / "images/00000.png").read_bytes()
    rows = [json.loads(line) for line in (a.train / "metadata.jsonl").read_text().splitlines()]
    names = synthetic_vocabulary().names
    assert len(rows) == 12 and all((a.train / r["file_name"]).is_file() for r in rows)
    assert all(len(r["labels"]) <= 3 and set(r["labels"]) <= set(names) for r in rows)


def test_labels_match_the_pixels() -> None:
    """Scenes with one label: the saturated pixels have the label's color; empty scenes have none."""
    rng = random.Random(0)
    checked = {"empty": 0, "single": 0}
    for _ in range(200):
        img, labels = make_scene(rng)
        px = np.asarray(img, dtype=int).reshape(-1, 3)
        spread = px.max(1) - px.min(1)
        vivid = px[spread > 120]  # background: spread <= 80 (+ noise); shapes: >= 130
        if not labels:
            assert len(vivid) == 0
            checked["empty"] += 1
        elif len(labels) == 1:
            color = labels[0].split()[0]
            assert len(vivid) > 20
            assert int(np.argmax(vivid.mean(0))) == int(np.argmax(COLORS[color]))
            checked["single"] += 1
    assert checked["empty"] > 5 and checked["single"] > 30
    assert img.size == (64, 64) and img.mode == "RGB"


def test_recipe_builds_with_the_simulated_engine(tmp_path: Path) -> None:
    from builder.run.build import Builder

    syn = make_synthetic(tmp_path / "syn", n=20, n_test=5, seed=1)
    loaded = load_recipe(syn.recipe)
    assert loaded.recipe.engine.kind == "simulated" and loaded.recipe.source.kind == "folder"
    out = tmp_path / "out"
    Builder(loaded, out, progress=False).run()
    records = list(layout.iter_records(out))
    assert len(records) == 20 and all(r.status == "ok" and r.simulated for r in records)
    truth = {json.loads(line)["file_name"]: json.loads(line)["labels"]
             for line in (syn.train / "metadata.jsonl").read_text().splitlines()}
    assert sorted(r.reference for r in records) == sorted(truth.values())


def test_write_output_is_readable(tmp_path: Path) -> None:
    import tarfile

    vocab = synthetic_vocabulary()
    img = Image.new("RGB", (8, 8), (255, 0, 0))
    records = [Record(key=f"k{i}", status="ok" if i != 2 else "failed", labels=["red circle"], ext="png",
                      reference=["red circle"]) for i in range(5)]
    out = write_output(tmp_path / "out", records, vocab, {f"k{i}": png_bytes(img) for i in range(5)},
                       samples_per_shard=2)
    assert [r.key for r in layout.iter_records(out)] == [f"k{i}" for i in range(5)]
    assert layout.completed_shards(out) == [0, 1, 2]
    members = []
    for path in sorted((out / layout.WDS_DIR).glob("*.tar")):
        with tarfile.open(path) as tar:
            members += tar.getnames()
    # failed records are not in the shards (the index keeps them)
    # one image member name for every sample (the record's ext says png)
    assert sorted(members) == [f"k{i}.{ext}" for i in (0, 1, 3, 4) for ext in ("jpg", "json")]
    assert load_recipe(out / layout.RECIPE).vocab.names == vocab.names
