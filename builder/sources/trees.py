"""Where a reader's files live: a local folder, or a prefix of an object store (s3://, gs://) read through fsspec.

Paths inside a tree are posix strings: local paths as the OS names them, store paths as fsspec names
them ('bucket/prefix/x.jpg'); `shown` turns one back into what a message prints. Readers list and
relate paths the same way on both, so a folder on disk and its copy in a bucket give the same
relative paths, hence the same keys and refs.
"""

from __future__ import annotations

import os
import posixpath
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO

from builder import storage
from builder.errors import UserError


class Tree(ABC):
    """A folder of files; `root` is a normalised posix path inside its filesystem."""

    root: str

    def relative(self, target: str) -> str | None:
        """`target` relative to the root ('.' for the root itself); None when it lies outside."""
        target = posixpath.normpath(target)
        if target == self.root:
            return "."
        prefix = self.root.rstrip("/") + "/"
        return target[len(prefix):] if target.startswith(prefix) else None

    def join(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    @abstractmethod
    def locate(self, value: str) -> str:
        """A path a recipe gives (absolute, or relative to the root) as a normalised path of this filesystem."""

    @abstractmethod
    def shown(self, path: str) -> str:
        """How messages name `path`."""

    @abstractmethod
    def is_file(self, path: str) -> bool: ...

    @abstractmethod
    def open_text(self, path: str) -> IO[str]:
        """A UTF-8 text file (newline='' as csv wants); a store error is a one-line UserError."""

    @abstractmethod
    def files(self) -> list[str]:
        """Relative paths of every file below the root, sorted; hidden files and folders left out."""

    @abstractmethod
    def read(self, rel: str) -> bytes:
        """The bytes of one file; any failure is an OSError (FileNotFoundError when it is absent)."""


class LocalTree(Tree):
    def __init__(self, root: Path):
        self.root = os.path.normpath(root)

    def locate(self, value: str) -> str:
        p = Path(value).expanduser()
        return os.path.normpath(p if p.is_absolute() else Path(self.root, p))

    def shown(self, path: str) -> str:
        return path

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def open_text(self, path: str) -> IO[str]:
        return open(path, encoding="utf-8", newline="")

    def files(self) -> list[str]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.root)
            found += [name if rel == "." else f"{rel}/{name}" for name in filenames if not name.startswith(".")]
        return sorted(p.replace(os.sep, "/") for p in found)

    def read(self, rel: str) -> bytes:
        return Path(self.root, rel).read_bytes()


class StoreTree(Tree):
    """An object-store prefix. Listings are fetched fresh (fsspec caches them per filesystem object)."""

    def __init__(self, url: str, setting: str = "source.path"):
        self.url = url.rstrip("/")
        self.fs, path = storage.url_fs(self.url)
        self.root = posixpath.normpath(path) if path else path
        try:
            self.fs.invalidate_cache(self.root)
            kind = self.fs.info(self.root)["type"]
        except Exception as exc:  # each store raises its own errors: all of them end in one line
            raise UserError(f"{setting}: {storage.failure(exc, self.url)}") from exc
        if kind != "directory":
            raise UserError(f"{setting}: not a folder (prefix): {self.url}")

    def locate(self, value: str) -> str:
        if storage.is_url(value):
            fs, path = storage.url_fs(value)
            if type(fs) is not type(self.fs):
                raise UserError(f"{value}: must be in the same store as {self.url}")
            return posixpath.normpath(path)
        return posixpath.normpath(posixpath.join(self.root, value))

    def shown(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))

    def is_file(self, path: str) -> bool:
        try:
            return bool(self.fs.isfile(path))
        except Exception as exc:
            raise UserError(storage.failure(exc, self.shown(path))) from exc

    def open_text(self, path: str) -> IO[str]:
        try:
            return self.fs.open(path, "r", encoding="utf-8", newline="")
        except Exception as exc:
            raise UserError(storage.failure(exc, self.shown(path))) from exc

    def files(self) -> list[str]:
        try:
            self.fs.invalidate_cache(self.root)
            found = self.fs.find(self.root)
        except Exception as exc:
            raise UserError(f"source.path: {storage.failure(exc, self.url)}") from exc
        rels = (self.relative(p) for p in found)
        return sorted(r for r in rels if r and r != "." and not any(part.startswith(".") for part in r.split("/")))

    def read_many(self, rels: list[str]) -> dict[str, bytes | OSError]:
        """Several objects in one concurrent fetch: rel -> bytes, or the OSError reading it; a rel left out
        (all of them when the fetch as a whole failed) is read by the caller on its own."""
        paths = {self.join(rel): rel for rel in rels}
        try:
            got = self.fs.cat(list(paths), on_error="return")
        except Exception:  # noqa: BLE001 - the whole fetch failed: the caller reads them one by one instead
            return {}
        found: dict[str, bytes | OSError] = {}
        for path, value in got.items():
            rel = paths.get(path) or paths.get(self.fs._strip_protocol(path))
            if rel is not None:
                found[rel] = _as_os_error(value) if isinstance(value, BaseException) else bytes(value)
        return found

    def read(self, rel: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self.join(rel)))
        except OSError:
            raise
        except Exception as exc:  # botocore / aiohttp / google errors that the store did not translate
            raise _as_os_error(exc) from exc



def _as_os_error(exc: BaseException) -> OSError:
    """Store errors as OSError (what a local read raises), so a failed read is recorded the same way."""
    if isinstance(exc, OSError):
        return exc
    return OSError(storage.first_line(exc))
