"""Push: the calls made to huggingface_hub, checked against its real signatures; never the real Hub."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from click.testing import CliRunner
from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects

from builder.cli import main
from builder.errors import RunError, UserError
from builder.publish.hub import push


class RecordingApi:
    """Stands in for HfApi: records each call after binding it to HfApi's real signature."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail

    def _record(self, name: str, kwargs: dict) -> None:
        inspect.signature(getattr(HfApi, name)).bind(None, **kwargs)  # raises on a wrong argument name
        self.calls.append((name, kwargs))
        if self.fail:
            raise self.fail

    def create_repo(self, **kwargs):
        self._record("create_repo", kwargs)

    def upload_folder(self, **kwargs):
        self._record("upload_folder", kwargs)
        return type("Commit", (), {"commit_url": f"https://huggingface.co/datasets/{kwargs['repo_id']}/commit/1"})()


def uploaded_files(folder: Path, kwargs: dict) -> list[str]:
    """What huggingface_hub itself would select from the folder with our patterns."""
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return sorted(filter_repo_objects(files, allow_patterns=kwargs["allow_patterns"],
                                      ignore_patterns=kwargs["ignore_patterns"]))


def test_push_uploads_data_card_and_recipe_but_not_the_cache(build):
    out = build().out
    (out / "train").mkdir()
    (out / "train" / "ckpt.pt").write_bytes(b"weights")
    api = RecordingApi()
    url = push(out, "me/demo", private=True, allow_simulated=True, api=api)
    assert url.endswith("/commit/1")
    (create, c_kwargs), (upload, u_kwargs) = api.calls
    assert create == "create_repo" and c_kwargs == {"repo_id": "me/demo", "repo_type": "dataset",
                                                    "private": True, "exist_ok": True}
    assert upload == "upload_folder" and u_kwargs["repo_type"] == "dataset"
    files = uploaded_files(out, u_kwargs)
    assert {"README.md", "recipe.yaml", "stats.json", "manifest.json"} <= set(files)
    assert any(f.startswith("data/train-") for f in files)
    assert any(f.startswith("webdataset/shard-") for f in files)
    assert any(f.startswith("index/shard-") for f in files)
    assert not any(f.startswith(("cache.sqlite", "train/")) or "/." in f for f in files)


def test_simulated_output_needs_explicit_consent(build):
    out = build().out
    with pytest.raises(UserError, match="--allow-simulated"):
        push(out, "me/demo", api=RecordingApi())


def test_unfinished_build_is_not_pushed(build):
    out = build().out
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"complete"', '"running"'))
    with pytest.raises(UserError, match="not complete"):
        push(out, "me/demo", allow_simulated=True, api=RecordingApi())


def test_hub_errors_are_one_line_without_secrets(build):
    out = build().out
    api = RecordingApi(fail=RuntimeError("401 Unauthorized\nmore detail"))
    with pytest.raises(RunError) as err:
        push(out, "me/demo", allow_simulated=True, api=api, token="hf_SECRET")
    assert "\n" not in str(err.value) and "hf_SECRET" not in str(err.value)


def test_cli_push_refuses_a_folder_that_is_no_output(tmp_path):
    result = CliRunner().invoke(main, ["push", str(tmp_path), "me/x"])
    assert result.exit_code == 2
    assert "not a tagllm output folder" in result.output
