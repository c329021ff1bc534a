"""Tiny data shared by fixtures: a small vocabulary and generated JPEG bytes."""

from __future__ import annotations

import io
import random
from typing import Any

SMALL_VOCAB: dict[str, Any] = {
    "name": "small",
    "version": "1",
    "groups": [
        {"name": "animal", "labels": [
            {"name": "cat", "description": "A domestic cat.", "synonyms": ["kitten"]},
            {"name": "dog", "description": "A dog of any breed.", "synonyms": ["puppy"]},
            {"name": "bird", "description": "Any bird."},
        ]},
        {"name": "vehicle", "labels": [
            {"name": "car", "description": "A passenger car."},
            {"name": "bus", "description": "A bus."},
        ]},
        {"name": "food", "labels": [
            {"name": "apple", "description": "An apple."},
            {"name": "hot dog", "description": "A sausage in a bun."},
        ]},
    ],
}


def jpeg(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(size[0], x + 20), min(size[1], y + 20)))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
