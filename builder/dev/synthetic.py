"""Synthetic labeled scenes: small images of colored shapes whose multi-labels are known exactly.

They exist for tests and for the CPU demo of downstream training, never as a benchmark of
labeling quality. Each 64x64 image holds 0-3 shapes; a label is "<color> <shape>" (12 labels in
4 groups, one group per shape, so the simulated engine's within-group confusions mean a wrong
color). `make_synthetic` writes a train folder and a test folder in the Hugging Face imagefolder
layout (`metadata.jsonl` beside the images), the vocabulary and a recipe for the simulated engine.

`write_output` writes records as a tagllm output folder with the project's own writers, without a
build: tests and experiments use it to make outputs whose labels they control.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageDraw

from builder.publish import layout
from builder.recipe.vocab import Vocabulary
from builder.records import EncodedRecord, Record

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {"red": (230, 30, 30), "green": (30, 190, 40), "blue": (30, 60, 230)}
SHAPE_TEXT = {
    "circle": "a round filled disc",
    "square": "a filled axis-aligned square",
    "triangle": "a filled triangle pointing up",
    "cross": "a plus-shaped cross of two bars",
}
SHAPE_COUNTS = (0.1, 0.3, 0.3, 0.3)  # chance of 0, 1, 2, 3 shapes in a scene


def synthetic_vocabulary() -> Vocabulary:
    """12 labels "<color> <shape>", grouped by shape."""
    groups = []
    for shape in SHAPES:
        labels = [
            {"name": f"{color} {shape}", "description": f"{SHAPE_TEXT[shape]}, colored {color}",
             "synonyms": [f"{color} {shape}s"]}
            for color in COLORS
        ]
        groups.append({"name": shape, "labels": labels})
    return Vocabulary.model_validate({"name": "synthetic-shapes", "version": "1", "groups": groups})


def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # cross
        w = max(2, (x1 - x0) // 3)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((cx - w // 2, y0, cx + (w - w // 2), y1), fill=fill)
        draw.rectangle((x0, cy - w // 2, x1, cy + (w - w // 2)), fill=fill)


def make_scene(rng: random.Random, size: int = 64, max_shapes: int = 3) -> tuple[Image.Image, list[str]]:
    """One image and its labels (vocabulary order). Shapes avoid overlapping when they can."""
    bg = _jitter(rng, (200, 200, 200), 30)
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    weights = list(SHAPE_COUNTS[: max_shapes + 1])
    count = rng.choices(range(len(weights)), weights=weights)[0]
    placed: list[tuple[int, int, int, int]] = []
    present: set[str] = set()
    for _ in range(count):
        shape = rng.choice(SHAPES)
        color = rng.choice(list(COLORS))
        for _attempt in range(20):
            side = rng.randint(size * 3 // 16, size * 3 // 8)
            x0, y0 = rng.randint(1, size - side - 1), rng.randint(1, size - side - 1)
            box = (x0, y0, x0 + side, y0 + side)
            if not any(_overlap(box, other) for other in placed):
                break
        placed.append(box)
        _draw(draw, shape, box, _jitter(rng, COLORS[color], 20))
        present.add(f"{color} {shape}")
    # mild seeded pixel noise, so the task is not solvable by exact color lookup
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, 6.0, (size, size, 3))
    img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
    names = synthetic_vocabulary().names
    return img, [n for n in names if n in present]


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def write_split(folder: Path, n: int, seed: int, size: int = 64, max_shapes: int = 3) -> Path:
    """`n` scenes as PNG under folder/images, labels in folder/metadata.jsonl. Returns the metadata path."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        img, labels = make_scene(rng, size, max_shapes)
        name = f"images/{i:05d}.png"
        img.save(folder / name, format="PNG")
        lines.append(json.dumps({"file_name": name, "labels": labels}))
    meta = folder / "metadata.jsonl"
    meta.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return meta


@dataclass
class SyntheticSet:
    root: Path
    recipe: Path
    vocabulary: Path
    train: Path
    test: Path
    n_train: int
    n_test: int


def make_synthetic(out_dir: str | Path, n: int = 1000, seed: int = 0, n_test: int = 300, size: int = 64,
                   max_shapes: int = 3, simulation: dict[str, Any] | None = None) -> SyntheticSet:
    """Write a synthetic train split, a test split, the vocabulary and a simulated-engine recipe.

    out_dir/train and out_dir/test are image folders with `metadata.jsonl`; the test split has its
    own seed so no image repeats. `simulation` overrides `engine.simulation` (noise rates) in the
    recipe, e.g. {"miss_rate": 0.4}. Build with `tagllm build out_dir/recipe.yaml`.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    vocab = synthetic_vocabulary()
    vocab_path = root / "vocab.yaml"
    vocab_path.write_text(yaml.safe_dump(vocab.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    write_split(root / "train", n, seed, size, max_shapes)
    write_split(root / "test", n_test, seed + 1_000_003, size, max_shapes)
    recipe = {
        "name": "synthetic-shapes",
        "description": "Synthetic colored shapes with exact labels, for tests and the CPU training demo.",
        "source": {"kind": "folder", "path": "train"},
        "vocabulary": "vocab.yaml",
        "engine": {"kind": "simulated", "simulation": {"seed": seed, **(simulation or {})}},
        "output": {"dir": str((root / "out").resolve()), "samples_per_shard": 500},
        "card": {"license": "cc0-1.0", "pretty_name": "Synthetic shapes (simulated labels)",
                 "description": "Generated scenes; labels from the simulated engine, not from a model."},
    }
    recipe_path = root / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return SyntheticSet(root, recipe_path, vocab_path, root / "train", root / "test", n, n_test)


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def write_output(out_dir: str | Path, records: Iterable[Record], vocab: Vocabulary,
                 images: dict[str, bytes] | None = None, recipe: dict[str, Any] | None = None,
                 formats: tuple[str, ...] = ("webdataset", "hf"), samples_per_shard: int = 500) -> Path:
    """Write records (and their image bytes, by key) as a complete tagllm output folder.

    Uses the build's writers, so the files are what a build writes; `recipe` is the resolved
    recipe to save (a minimal folder-source recipe with the vocabulary inline by default).
    """
    from builder.publish.writers import make_writers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = images or {}
    writers = make_writers(out, vocab, list(formats))
    records = list(records)
    shards = []
    for shard, start in enumerate(range(0, max(len(records), 1), samples_per_shard)):
        chunk = records[start:start + samples_per_shard]
        for w in writers:
            w.begin_shard(shard)
        for record in chunk:
            encoded = EncodedRecord(record)
            for w in writers:
                w.write(encoded, images.get(record.key))
        for w in writers:
            w.end_shard()
        counts = {"shard": shard, "records": len(chunk), "ok": sum(r.status == "ok" for r in chunk)}
        counts["failed"] = counts["records"] - counts["ok"]
        layout.shard_stats_path(out, shard).write_text(json.dumps(counts), encoding="utf-8")
        shards.append(shard)
    for w in writers:
        w.finalize(shards)
    data = recipe or {"name": "written", "source": {"kind": "folder", "path": "."}}
    data = {**data, "vocabulary": vocab.model_dump(mode="json")}
    (out / layout.RECIPE).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    total = {"records": len(records), "ok": sum(r.status == "ok" for r in records),
             "simulated": any(r.simulated for r in records)}
    (out / layout.STATS).write_text(json.dumps(total), encoding="utf-8")
    manifest = {"status": "complete", "shards": len(shards), "written_by": "builder.dev.synthetic.write_output"}
    (out / layout.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return out
