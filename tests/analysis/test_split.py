"""The dev / held-out split: exact sizes, seeded, rare labels on both sides."""

from __future__ import annotations

import random

import pytest

from builder.analysis.split import split_dev_heldout


def rows(n: int = 200, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    common = ["a", "b", "c"]
    out = [rng.sample(common, rng.randrange(0, 3)) for _ in range(n)]
    for i, rare in ((3, "r1"), (n - 1, "r1"), (7, "r2"), (8, "r2"), (n // 2, "r2"), (9, "once")):
        out[i] = out[i] + [rare]
    return out


def test_sizes_seed_and_rare_labels() -> None:
    labels = rows()
    dev, held = split_dev_heldout(labels, 40, 160, seed=1)
    assert len(dev) == 40 and len(held) == 160 and not set(dev) & set(held)
    assert (dev, held) == split_dev_heldout(labels, 40, 160, seed=1)
    assert dev != split_dev_heldout(labels, 40, 160, seed=2)[0]
    for rare in ("r1", "r2"):  # two or three images: one on each side, although dev is a fifth
        assert any(rare in labels[i] for i in dev) and any(rare in labels[i] for i in held), rare
    share = sum("a" in labels[i] for i in dev) / max(1, sum("a" in row for row in labels))
    assert 0.1 < share < 0.3  # a common label keeps roughly the dev fraction


def test_part_of_the_images_and_bad_sizes() -> None:
    dev, held = split_dev_heldout(rows(50), 10, 20)
    assert len(dev) == 10 and len(held) == 20
    with pytest.raises(ValueError):
        split_dev_heldout(rows(10), 8, 5)
    with pytest.raises(ValueError):
        split_dev_heldout(rows(10), 0, 5)
