"""Decoded, resized images for training and testing, and the checks made before any training starts:
test images that do not decode, and test images that are also training images."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from builder.analysis.samples import Sample, compare_images, digests

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode(data: bytes, size: int) -> torch.Tensor:
    """Encoded image -> normalized float tensor (3, size, size)."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


class LabeledImages(torch.utils.data.Dataset):
    """Map-style dataset over samples: decoded, resized image and a multi-hot target."""

    def __init__(self, samples: list[Sample], names: list[str], size: int, augment: bool = False):
        self.samples = samples
        self.col = {n: i for i, n in enumerate(names)}
        self.size = size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.samples[i]
        x = decode(s.read(), self.size)
        if self.augment and torch.rand(()) < 0.5:
            x = x.flip(-1)
        y = torch.zeros(len(self.col))
        y[[self.col[n] for n in s.labels if n in self.col]] = 1.0
        return x, y


def readable(samples: list[Sample], size: int) -> tuple[list[Sample], list[dict[str, str]]]:
    """The samples whose image reads and decodes, and (key, reason) for the others."""
    good, bad = [], []
    for s in samples:
        try:
            decode(s.read(), size)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            bad.append({"key": s.key, "reason": f"{type(exc).__name__}: {exc}"[:200]})
        else:
            good.append(s)
    return good, bad


def leakage(train: list[Sample], test: list[Sample]) -> tuple[dict[str, Any], str, str]:
    """Image overlap between the training and the test split (by digest), and a digest of each split."""
    ours, theirs = digests(train), digests(test)
    return compare_images(ours, theirs), _set_digest(ours.values()), _set_digest(theirs.values())


def _set_digest(values: Any) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(values)).encode()).hexdigest()[:16]
