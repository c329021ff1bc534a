"""Seeded dev / held-out split of labeled images that keeps rare labels on both sides.

Thresholds or concept entries chosen on some images look better on those same images than on new
ones. Calibration and threshold tuning therefore decide on a dev part and report the held-out part.
The split is greedy iterative stratification under exact sizes: images are placed rarest label
first, each into the part that still needs its labels most, so a label with two or more images
has at least one on each side whenever the sizes allow it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence


def split_dev_heldout(labels: Sequence[Sequence[str]], dev: int, held_out: int, seed: int = 0
                      ) -> tuple[list[int], list[int]]:
    """Indices of the dev part and of the held-out part (`dev + held_out` <= len(labels))."""
    n = len(labels)
    if dev < 1 or held_out < 1 or dev + held_out > n:
        raise ValueError(f"cannot split {n} images into {dev} dev and {held_out} held-out")
    count = Counter(label for row in labels for label in set(row))
    frac = dev / (dev + held_out)
    need = [{name: _share(c, frac) for name, c in count.items()},
            {name: _share(c, 1 - frac) for name, c in count.items()}]
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    rank = {i: pos for pos, i in enumerate(order)}
    order.sort(key=lambda i: (min((count[x] for x in labels[i]), default=n + 1), rank[i]))
    room = [dev, held_out]
    parts: list[list[int]] = [[], []]
    for i in order:
        if not room[0] and not room[1]:
            break
        side = _side(labels[i], count, need, room, rng)
        parts[side].append(i)
        room[side] -= 1
        for name in set(labels[i]):
            need[side][name] -= 1
    return sorted(parts[0]), sorted(parts[1])


def _share(count: int, frac: float) -> float:
    """How many images of a label a part should get: its share, and at least one when there are two."""
    want = count * frac
    return max(want, 1.0) if count >= 2 else want


def _side(row: Sequence[str], count: Counter[str], need: list[dict[str, float]], room: list[int],
          rng: random.Random) -> int:
    """The part that needs this image's rarest label more; then its labels overall; then more room."""
    if not room[0]:
        return 1
    if not room[1]:
        return 0
    if row:
        rarest = min(set(row), key=lambda name: (count[name], name))
        if need[0][rarest] != need[1][rarest]:
            return 0 if need[0][rarest] > need[1][rarest] else 1
        gain = [sum(need[s][name] for name in set(row)) for s in (0, 1)]
        if gain[0] != gain[1]:
            return 0 if gain[0] > gain[1] else 1
    return rng.choice((0, 1)) if room[0] == room[1] else (0 if room[0] > room[1] else 1)
