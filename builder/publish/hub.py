"""Publish an output folder to the Hugging Face Hub: data, card, recipe and concept sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.errors import RunError, UserError
from builder.publish import layout

UPLOAD = ["README.md", "contact_sheet.jpg", "recipe.yaml", "concepts.yaml", "stats.json", "manifest.json",
          "data/*.parquet", "webdataset/*.tar", "index/*", "eval/*", "issues/*"]
NEVER = ["cache.sqlite*", "**/.*", ".*", "train/*"]  # raw traffic, temp files, checkpoints: not data


def push(out: Path, repo_id: str, private: bool = True, allow_simulated: bool = False,
         api: Any = None, token: str | None = None) -> str:
    """Create the dataset repo if needed and upload the folder; returns the commit URL.

    The token comes from the argument, HF_TOKEN, or `hf auth login`: huggingface_hub looks them up,
    and it never passes through our logs or files. The card is re-rendered first so its snippets
    load from `repo_id`.
    """
    out = layout.require_output(Path(out))
    manifest = layout.read_json(out / layout.MANIFEST)
    if manifest.get("status") != "complete":
        raise UserError(f"{out}: the build is not complete (status {manifest.get('status')!r}); finish it first")
    if manifest.get("simulated") and not allow_simulated:
        raise UserError(f"{out}: labels come from the simulated engine; pass --allow-simulated to publish them anyway")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"repo id {repo_id!r}: expected 'user/name'")
    if api is None:
        from huggingface_hub import HfApi, get_token

        token = token or get_token()
        if not token:
            raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again")
        api = HfApi(token=token)
    from builder.publish.card import write_card

    write_card(out, repo_id=repo_id)
    try:
        api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(out), repo_id=repo_id, repo_type="dataset",
                                 allow_patterns=UPLOAD, ignore_patterns=NEVER,
                                 commit_message=f"tagllm: {manifest.get('name', 'dataset')}")
    except Exception as exc:  # network, auth, permissions: one line, no token
        write_card(out)  # nothing was published: the local card points at its own folder again
        raise RunError(f"push to {repo_id} failed: {push_problem(exc)}") from exc
    return str(getattr(info, "commit_url", info))


def push_problem(exc: BaseException) -> str:
    """What went wrong in words: no network, refused token, missing rights, or the error's first line."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 6:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = " ".join(type(e).__name__ for e in chain)
    text = " ".join(str(e) for e in chain)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return "the token was refused (401): check HF_TOKEN or run `hf auth login`"
    if status == 403:
        return "the token may not write to this repo (403): use a write token, or a namespace you own"
    if "ConnectError" in names or "Name or service not known" in text or "nodename nor servname" in text \
            or "Temporary failure in name resolution" in text or "ConnectionError" in names:
        return "cannot reach the Hub (no network, or HF_ENDPOINT is wrong); nothing was uploaded"
    if "Timeout" in names:
        return "the Hub did not answer in time; push again (uploads resume)"
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
