"""Fixtures for engine tests: real photos, tiny VLMs built once per session, the sglang wheel's source."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from engines.standins import skip_or_fail

SGLANG_VERSION = "0.5.23"

# Files of the sglang wheel the contract tests read (never imported: they would pull in torch+CUDA).
SGLANG_FILES = (
    "sglang/srt/managers/io_struct.py",
    "sglang/srt/sampling/sampling_params.py",
    "sglang/srt/entrypoints/engine.py",
    "sglang/srt/entrypoints/openai/protocol.py",
    "sglang/api/v1/api_types.py",
)
SGLANG_ARG_FIELDS_DIR = "sglang/srt/arg_groups/fields/"


def _jpeg(array: Any, size: tuple[int, int] | None = None) -> bytes:
    from PIL import Image

    img = Image.fromarray(array).convert("RGB")
    if size:
        img = img.resize(size)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photos that ship offline with scikit-image (public domain / CC0), as JPEG bytes."""
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    return {
        "astronaut": _jpeg(data.astronaut(), (128, 128)),
        "chelsea": _jpeg(data.chelsea(), (150, 100)),
        "coffee": _jpeg(data.coffee(), (150, 100)),
        "rocket": _jpeg(data.rocket(), (80, 120)),
    }


def _tiny(tmp_path_factory: pytest.TempPathFactory, arch: str) -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("xgrammar")
    from builder.dev.tiny_vlm import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp(f"tiny-{arch}"), arch=arch, seed=0)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory, "llava")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory, "qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory, "idefics3")


@pytest.fixture(scope="session")
def sglang_source(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Source text of the sglang files our requests must agree with, read from the PyPI wheel.

    The wheel is fetched once with `pip download --no-deps` into .pytest_cache (never committed)
    and opened as a zip: nothing of sglang is imported or installed. A failed download skips.
    """
    cache = getattr(pytestconfig, "cache", None)  # None under -p no:cacheprovider
    name = f"sglang-{SGLANG_VERSION}-wheel"
    folder = cache.mkdir(name) if cache is not None else tmp_path_factory.mktemp(name)
    wheels = sorted(folder.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
    if not wheels:
        # the same Linux/CPython 3.11 wheel whatever machine runs the tests (only its text is read)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--platform", "manylinux_2_34_x86_64", "--python-version", "3.11",
               "--implementation", "cp", f"sglang=={SGLANG_VERSION}", "-d", str(folder)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            skip_or_fail(f"cannot download sglang=={SGLANG_VERSION} from PyPI for the contract tests: {exc}")
        wheels = sorted(folder.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
        if done.returncode != 0 or not wheels:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
            skip_or_fail(f"cannot download sglang=={SGLANG_VERSION} from PyPI for the contract tests: {tail[0]}")
    out: dict[str, str] = {}
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        for name in SGLANG_FILES:
            if name in names:
                out[name] = wheel.read(name).decode("utf-8")
        for name in sorted(names):
            if name.startswith(SGLANG_ARG_FIELDS_DIR) and name.endswith(".py"):
                out[name] = wheel.read(name).decode("utf-8")
    missing = [n for n in SGLANG_FILES[:3] if n not in out]
    assert not missing, f"the sglang {SGLANG_VERSION} wheel no longer has {missing}: update the contract tests"
    return out


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pypi: downloads a wheel from PyPI (pip download); skips with the reason when it cannot"
    )
