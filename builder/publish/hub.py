"""Publish an output folder to the Hugging Face Hub: data, card, recipe and concept sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.errors import RunError, UserError
from builder.publish import layout

UPLOAD = ["README.md", "recipe.yaml", "concepts.yaml", "stats.json", "manifest.json",
          "data/*.parquet", "webdataset/*.tar", "index/*", "eval/*"]
NEVER = ["cache.sqlite*", "**/.*", ".*", "train/*"]  # raw traffic, temp files, checkpoints: not data


def push(out: Path, repo_id: str, private: bool = True, allow_simulated: bool = False,
         api: Any = None, token: str | None = None) -> str:
    """Create the dataset repo if needed and upload the folder; returns the commit URL.

    The token comes from the argument, HF_TOKEN, or `huggingface-cli login`: huggingface_hub looks
    them up, and it never passes through our logs or files.
    """
    out = layout.require_output(Path(out))
    manifest = layout.read_json(out / layout.MANIFEST)
    if manifest.get("status") != "complete":
        raise UserError(f"{out}: the build is not complete (status {manifest.get('status')!r}); finish it first")
    if manifest.get("simulated") and not allow_simulated:
        raise UserError(f"{out}: labels come from the simulated engine; pass --allow-simulated to publish them anyway")
    if "/" not in repo_id:
        raise UserError(f"repo id {repo_id!r}: expected 'user/name'")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(out), repo_id=repo_id, repo_type="dataset",
                                 allow_patterns=UPLOAD, ignore_patterns=NEVER,
                                 commit_message=f"tagllm: {manifest.get('name', 'dataset')}")
    except Exception as exc:  # network, auth, permissions: one line, no token
        raise RunError(f"push to {repo_id} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    return str(getattr(info, "commit_url", info))
