"""Shared fixtures for the source readers: a small vocabulary, tiny real images, a reader factory."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from builder.recipe.model import SourceSpec
from builder.recipe.vocab import Vocabulary
from builder.sources import Source, open_source

VOCAB = {
    "name": "tiny",
    "version": "1",
    "groups": [
        {
            "name": "animal",
            "labels": [
                {"name": "cat", "synonyms": ["kitten"]},
                {"name": "dog", "synonyms": ["puppy"]},
            ],
        },
        {"name": "vehicle", "labels": [{"name": "car", "synonyms": ["automobile"]}]},
        {"name": "food", "labels": [{"name": "hot dog", "synonyms": ["frankfurter"]}]},
    ],
}


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every `datasets` cache write under a temp dir and never reach for the Hub."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets.config as config
    except ImportError:  # pragma: no cover
        return
    # `datasets` reads these at import time, so the module attributes are what counts.
    monkeypatch.setattr(config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(config, "HF_MODULES_CACHE", home / "modules")
    monkeypatch.setattr(config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / "downloads")
    monkeypatch.setattr(config, "EXTRACTED_DATASETS_PATH", home / "datasets" / "downloads" / "extracted")
    monkeypatch.setattr(config, "HF_HUB_OFFLINE", True)


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.model_validate(VOCAB)


def image_bytes(color: str = "red", fmt: str = "PNG", size: tuple[int, int] = (6, 4)) -> bytes:
    """A tiny real encoded image."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def make_image() -> Callable[..., bytes]:
    return image_bytes


@pytest.fixture
def open_src(tmp_path: Path, vocab: Vocabulary) -> Callable[..., Source]:
    """open_src(kind, path, **spec_fields) -> a reader with base_dir = tmp_path."""

    def make(kind: str, path: str | Path, **fields: Any) -> Source:
        spec = SourceSpec(kind=kind, path=str(path), **fields)
        return open_source(spec, vocab, tmp_path)

    return make
