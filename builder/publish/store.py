"""An output folder in an object store (s3://bucket/prefix, gs://...), built through a local working folder.

Object stores have no rename and no append, but a PUT is atomic: an object is seen whole or not
at all. So a process writes each file as it does for a local output, into a private working folder
(the shard protocol unchanged: temporary name, rename, stats json last), and `push` puts what it
committed under the final object names, the shard's stats object last: that object is the
completion mark, listed by `completed()`. A process killed mid-upload leaves objects without a
mark; the shard counts as missing and the next run writes it again under the same names, so no
record is ever there twice. The working folder starts with the store's small files (`pull`:
manifest, recipe, index, shard marks, part markers, caches), so resume, `finalize` and the
gallery read them as on disk; images are read from the store only where the working folder does
not have them (`open_object`). Its images go once the run has put them up, the rest when the process ends.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from builder import storage
from builder.errors import RunError
from builder.publish import layout
from builder.publish.corrections import REVIEW_DIR

MARKER = layout.STORE_MARKER  # in a working folder: the URL it stands for
_SMALL = (layout.MANIFEST, layout.RECIPE, layout.CONCEPTS, layout.CACHE)
_SMALL_DIRS = (layout.INDEX_DIR, layout.PARTS_DIR, layout.CACHES_DIR, REVIEW_DIR)  # every object under them is pulled
T = TypeVar("T")


def _named(method: Callable[..., T]) -> Callable[..., T]:
    """Store errors (no bucket, access denied, no endpoint) become one line naming the URL."""

    @functools.wraps(method)
    def wrapper(self: StoreOutput, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except RunError:
            raise
        except Exception as exc:  # botocore/gcsfs errors are not all OSErrors (a bug of ours is not a store error)
            if isinstance(exc, (OSError, ValueError)) or type(exc).__module__.split(".")[0] in (
                    "botocore", "aiobotocore", "s3fs", "gcsfs", "google", "aiohttp", "fsspec"):
                raise RunError(storage.failure(exc, self.url)) from exc
            raise

    return wrapper


class StoreOutput:
    """One output URL and the working folder a process builds it in."""

    def __init__(self, url: str, work: Path):
        self.url = url.rstrip("/")
        self.fs, root = storage.url_fs(self.url)
        self.root = root.rstrip("/")
        self.work = work

    @classmethod
    def open(cls, url: str) -> StoreOutput:
        work = Path(tempfile.mkdtemp(prefix="tagllm-store-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)  # kept until then: the summary reads it
        store = cls(url, work)
        (work / MARKER).write_text(json.dumps({"url": store.url}), encoding="utf-8")
        return store

    def key(self, rel: str | Path) -> str:
        rel = Path(rel).as_posix()
        return self.root if rel in ("", ".") else f"{self.root}/{rel}"

    def close(self) -> None:
        """Delete the working folder (everything in it that matters has been pushed)."""
        shutil.rmtree(self.work, ignore_errors=True)

    def drop_bulk(self) -> None:
        """Once a run has put its files in the store: delete the working folder's images (tars, HF files) and
        gallery, keeping the small files the run's summary reads until the process ends."""
        for name in (layout.WDS_DIR, layout.HF_DIR, "gallery"):
            shutil.rmtree(self.work / name, ignore_errors=True)

    # reading --------------------------------------------------------------------------------
    def _names(self, rel_dir: str) -> list[str]:
        """Names of the objects directly under `rel_dir` (fresh: listings are not cached between calls)."""
        folder = self.key(rel_dir)
        self.fs.invalidate_cache(folder)
        try:
            return sorted(p.rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))
        except FileNotFoundError:
            return []

    @_named
    def check(self) -> None:
        """Fail early with one line when the bucket cannot be reached (missing, no credentials)."""
        bucket = self.root.split("/", 1)[0]
        if not self.fs.exists(bucket):
            raise RunError(f"{self.url}: the bucket {bucket!r} does not exist or cannot be seen "
                           "with these credentials; create it or check the store's credentials")

    @_named
    def pull(self, fresh: bool = False) -> None:
        """Copy the store's small files into the working folder (what resume and finalize read); `fresh`
        (an --overwrite): only the manifest and the human corrections, which outlive it."""
        self.fs.invalidate_cache(self.root)
        for name in (layout.MANIFEST,) if fresh else _SMALL:
            self._get(name, missing_ok=True)
        for folder in (REVIEW_DIR,) if fresh else _SMALL_DIRS:
            self.pull_dir(folder)

    @_named
    def pull_shard(self, shard: int) -> bool:
        """Bring one shard's mark and index down when the store has it (another worker committed it)."""
        if not self._get(layout.shard_stats_path(Path(), shard), missing_ok=True):
            return False
        self._get(layout.index_path(Path(), shard))
        return True

    @_named
    def pull_dir(self, rel_dir: str, missing_only: bool = False) -> None:
        """Every object directly under `rel_dir` (`missing_only`: those the working folder lacks)."""
        for name in self._names(rel_dir):
            if not (missing_only and (self.work / rel_dir / name).exists()):
                self._get(f"{rel_dir}/{name}", missing_ok=True)

    @_named
    def top_names(self) -> list[str]:
        """Names directly under the output's prefix (files and folders)."""
        self.fs.invalidate_cache(self.root)
        return self._names("")

    def _get(self, rel: str | Path, missing_ok: bool = False) -> bool:
        local = self.work / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get_file(self.key(rel), str(local))
        except FileNotFoundError:
            if missing_ok:
                return False
            raise
        return True

    @_named
    def completed(self) -> list[int]:
        """Shards whose stats object exists in the store (the completion marks)."""
        return sorted(k for k in map(layout.shard_of_mark, self._names(layout.INDEX_DIR)) if k is not None)

    @_named
    def open_object(self, rel: str | Path) -> Any:
        """A file object reading one object of the output (images the working folder does not hold)."""
        return self.fs.open(self.key(rel), "rb")

    @contextmanager
    def shard_file(self, shard: int) -> Iterator[tuple[str, Any] | None]:
        """("parquet" | "tar", an open file) of a shard's images in the store, else None."""
        hf = [n for n in self._names(layout.HF_DIR) if n.startswith(f"train-{shard:05d}")]
        rel, kind = (f"{layout.HF_DIR}/{hf[0]}", "parquet") if hf else (layout.tar_path(Path(), shard), "tar")
        try:
            handle = self.open_object(rel)
        except RunError:
            yield None
            return
        with handle:
            yield kind, handle

    # writing --------------------------------------------------------------------------------
    @_named
    def push(self, rels: Iterable[str | Path]) -> None:
        """Put these files of the working folder under their final names, all at once (each object is
        whole or absent: order between groups comes from separate calls, e.g. a shard's mark after its files)."""
        self._put({r: r for r in rels})

    def _put(self, targets: dict[str | Path, str | Path]) -> None:
        """Working-folder file -> object name (relative to the output), all at once."""
        if len(targets) == 1:
            [(local, rel)] = targets.items()
            self.fs.put_file(str(self.work / local), self.key(rel))
        elif targets:
            self.fs.put([str(self.work / r) for r in targets], [self.key(r) for r in targets.values()])

    @_named
    def push_shard(self, shard: int, files: list[Path], total: int | None = None) -> None:
        """A committed shard's files, then its stats (the mark); an older data file of the shard goes first.

        With the shard `total` known, the HF file goes up under its final name (train-K-of-N): no copy
        inside the store at the end (`name_data_files` then finds nothing to rename)."""
        targets = {f.relative_to(self.work): _final(f.relative_to(self.work), shard, total) for f in files}
        names = {t.as_posix() for t in targets.values()}
        self.delete(f"{layout.HF_DIR}/{n}" for n in self._names(layout.HF_DIR)
                    if n.startswith(f"train-{shard:05d}") and f"{layout.HF_DIR}/{n}" not in names)
        self._put(targets)
        self.push([layout.shard_stats_path(Path(), shard)])  # the mark, once every file of the shard is in

    @_named
    def push_finished(self) -> None:
        """What completing a build writes besides shards and cache (the recipe went up when it started):
        totals, card and its contact sheet, then the manifest. The gallery stays out, as on the Hub: one
        object per thumbnail and page would cost a request each on every completion; `tagllm view`
        writes it in a downloaded copy."""
        self.push(n for n in (layout.STATS, layout.CARD, layout.CONTACT_SHEET) if (self.work / n).is_file())
        self.push([layout.MANIFEST])
        self.drop_bulk()

    @_named
    def delete(self, rels: Iterable[str | Path]) -> None:
        keys = [self.key(r) for r in rels]
        if keys:
            self.fs.rm(keys)

    @_named
    def delete_dir(self, rel_dir: str) -> None:
        self.delete(f"{rel_dir}/{n}" for n in self._names(rel_dir))

    @_named
    def clear(self) -> None:
        """Delete every object of the output (--overwrite), the human corrections excepted."""
        self.fs.invalidate_cache(self.root)
        keys = [k for k in self.fs.find(self.root) if not k.startswith(self.key(REVIEW_DIR) + "/")]
        if keys:
            self.fs.rm(keys)

    @_named
    def drop_shards_from(self, first: int) -> None:
        """Shards at or after `first` (the source got shorter): their marks first, then their files."""
        stale = [k for k in self.completed() if k >= first]
        self.delete(layout.shard_stats_path(Path(), k) for k in stale)
        for k in stale:
            self.delete([p for p in (layout.index_path(Path(), k), layout.tar_path(Path(), k))
                         if self.fs.exists(self.key(p))])
            self.delete(f"{layout.HF_DIR}/{n}" for n in self._names(layout.HF_DIR) if n.startswith(f"train-{k:05d}"))

    @_named
    def name_data_files(self, total: int) -> None:
        """The HF files named with the shard total (the Hub's layout), by a copy inside the store."""
        for name in self._names(layout.HF_DIR):
            if name.startswith("train-") and name.endswith(".parquet"):
                target = layout.hf_file_name(int(name[len("train-"):len("train-") + 5]), total)
                if name != target:
                    self.fs.mv(self.key(f"{layout.HF_DIR}/{name}"), self.key(f"{layout.HF_DIR}/{target}"))


def _final(rel: Path, shard: int, total: int | None) -> Path:
    """The object name of a shard file: an HF file named with the shard total when it is known."""
    if total and rel.parent.name == layout.HF_DIR and rel.name == layout.hf_file_name(shard):
        return rel.with_name(layout.hf_file_name(shard, total))
    return rel


def store_of(folder: Path) -> StoreOutput | None:
    """The store a working folder stands for (None for an ordinary output folder)."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    return StoreOutput(json.loads(marker.read_text(encoding="utf-8"))["url"], Path(folder))
