"""Where a path points: a local path, or an object store URL (s3://bucket/prefix, gs://...) reached through fsspec.

Credentials and endpoints come from each store's usual environment and config (AWS_* variables,
~/.aws, AWS_ENDPOINT_URL for an S3-compatible server; GOOGLE_APPLICATION_CREDENTIALS for GCS), read
by s3fs and gcsfs themselves: tagllm never takes them as options, so they never reach a recipe,
a manifest or a card.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from builder.errors import UserError

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# the package fsspec needs for each store, named in the error when it is not installed
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


def scheme(target: str | Path) -> str | None:
    """'s3' for 's3://b/p'; None for a local path (or file://)."""
    m = _URL.match(str(target)) if isinstance(target, str) else None
    if m is None or m.group(1).lower() == "file":
        return None
    return m.group(1).lower()


def is_url(target: str | Path) -> bool:
    return scheme(target) is not None


def local_path(target: str | Path) -> Path:
    """A local target as a Path ('file://' dropped)."""
    text = str(target)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def url_fs(url: str) -> tuple[Any, str]:
    """(the fsspec filesystem, the path inside it) of a URL; a one-line error when its package is missing."""
    import fsspec

    proto = scheme(url) or "file"
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        pkg = PACKAGES.get(proto, f"the fsspec package for {proto}://")
        raise UserError(f"{url}: reading {proto}:// needs {pkg}: pip install 'tagllm[cloud]'") from exc
    except ValueError as exc:
        raise UserError(f"{url}: not a usable {proto}:// address ({exc})") from exc


def failure(exc: BaseException, url: str) -> str:
    """One line for a store error (no bucket, no permission, no endpoint) that names the URL."""
    text = first_line(exc)
    if isinstance(exc, PermissionError):
        return f"{url}: access denied ({text}); check the store's credentials (AWS_* variables, ~/.aws, gcloud)"
    if isinstance(exc, FileNotFoundError):
        return f"{url}: not found ({text})"
    return f"{url}: {type(exc).__name__}: {text}"


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (store clients write several), or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
