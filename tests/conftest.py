"""Shared fixtures: a tiny vocabulary, a folder of generated photos with human labels, recipes."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# Nothing may write under the real home cache or reach the Hub.
_HF_HOME = tempfile.mkdtemp(prefix="tagllm-hf-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ.setdefault("HF_HOME", _HF_HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# gcsfs >= 2026.10 first asks over gRPC whether a bucket is zonal (60 s against an emulator): plain JSON API
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

REPO = Path(__file__).resolve().parent.parent

from tinydata import SMALL_VOCAB, jpeg  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture
def small_vocab_file(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.yaml"
    path.write_text(yaml.safe_dump(SMALL_VOCAB, sort_keys=False))
    return path


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Twelve generated JPEGs with hand-set labels in metadata.jsonl (HF imagefolder style)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = [label["name"] for g in SMALL_VOCAB["groups"] for label in g["labels"]]
    rng = random.Random(7)
    with open(folder / "metadata.jsonl", "w") as meta:
        for i in range(12):
            name = f"img{i:02d}.jpg"
            (folder / name).write_bytes(jpeg(i))
            labels = rng.sample(names, rng.randrange(0, 4))
            meta.write(json.dumps({"file_name": name, "labels": labels}) + "\n")
    return folder


@pytest.fixture
def write_recipe(tmp_path: Path, small_vocab_file: Path, photo_folder: Path) -> Callable[..., Path]:
    """Write a recipe over the photo folder; keyword arguments update top-level sections."""

    def write(name: str = "recipe.yaml", **sections: Any) -> Path:
        data: dict[str, Any] = {
            "name": "test-set",
            "source": {"kind": "folder", "path": str(photo_folder)},
            "vocabulary": str(small_vocab_file),
            "engine": {"kind": "simulated", "concurrency": 8},
            "output": {"dir": str(tmp_path / "out"), "samples_per_shard": 5},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def build(write_recipe: Callable[..., Path]) -> Callable[..., Any]:
    """Run a build in-process and return the BuildResult."""
    from builder.recipe.model import load_recipe
    from builder.run.build import Builder

    def run(recipe: Path | None = None, overrides: list[str] | None = None, **kwargs: Any) -> Any:
        loaded = load_recipe(recipe or write_recipe(), overrides or [])
        return Builder(loaded, Path(loaded.recipe.output.dir), progress=False, **kwargs).run()

    return run


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty bucket on the session's moto S3 server, reached through the AWS_* environment: 's3://NAME'."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    import s3store

    for key, value in s3store.environment().items():
        monkeypatch.setenv(key, value)
    s3store.clear_fs_cache()
    return s3store.new_bucket()


@pytest.fixture
def gcs_bucket(monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty bucket on the session's GCS emulator, reached through STORAGE_EMULATOR_HOST: 'gs://NAME'."""
    pytest.importorskip("gcsfs")
    import gcsstore

    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcsstore.endpoint())
    except RuntimeError as exc:
        pytest.skip(str(exc))
    return gcsstore.new_bucket()
