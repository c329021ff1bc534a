"""WebDataset reader: samples from tar shards, raw member bytes, no decoding.

`spec.path` is one tar, a folder of tars (sorted by name), or a brace pattern such as
`shards/train-{000000..000009}.tar`, on disk or in an object store (s3://bucket/shards/, gs://...).
Local and store tars are opened here (store objects through fsspec, since webdataset's gopen knows
no s3://) and fed through webdataset's own tar expansion and key grouping, so a tar groups into the
same samples wherever it lies; pipe:, http(s):// and hf:// inputs are left to webdataset entirely.
A shard that cannot be read stops the run with a clear message naming the shard, because its
samples cannot be enumerated (and so cannot be recorded one by one).
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import IO, Any

from builder import storage
from builder.errors import UserError
from builder.records import Item
from builder.sources.base import Source
from builder.sources.folder import IMAGE_EXTS, safe_key, split_label_text

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
REMOTE = re.compile(r"^(pipe|https?|hf):")  # inputs webdataset opens itself (gopen)


def member_ext(field: str) -> str:
    """Last part of a member suffix: 'd.png' -> 'png' (keys split at the first dot)."""
    return field.rsplit(".", 1)[-1].lower()


class WebDatasetSource(Source):
    """Every sample of the shards, in shard order then tar order."""

    kind = "webdataset"

    def shard_urls(self) -> list[str]:
        """Local shard paths or store URLs (a brace pattern expanded here, so each shard is checked);
        webdataset's own remote inputs as given."""
        raw = self.spec.path
        if REMOTE.match(raw):
            return [raw]
        if storage.is_url(raw):
            return store_shards(raw)
        if "{" in raw:
            from braceexpand import braceexpand  # a dependency of webdataset

            shards = [self.resolve(name) for name in braceexpand(raw)]
            absent = [p for p in shards if not p.is_file()]
            if absent:
                raise UserError(f"source.path: {len(absent)} shard(s) of {raw} not found, e.g. {absent[0]}")
            return [str(p) for p in shards]
        path = self.resolve(raw)
        if path.is_dir():
            shards = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SHARD_SUFFIXES))
            if not shards:
                raise UserError(f"source.path: no .tar shards in {path}")
            return [str(p) for p in shards]
        if not path.is_file():
            raise UserError(f"source.path: no such tar file or folder: {path}")
        return [str(path)]

    def _samples(self, urls: list[str] | None = None) -> Iterator[dict[str, Any]]:
        urls = urls or self.shard_urls()
        if REMOTE.match(urls[0]):
            yield from self._remote_samples(urls)
            return
        from webdataset.tariterators import group_by_keys, tar_file_expander

        current = [urls[0]]  # the shard being read, for the message
        it = group_by_keys(tar_file_expander(_streams(urls, current)))
        while True:
            try:
                sample = next(it)
            except StopIteration:
                return
            except UserError:
                raise
            except Exception as exc:  # tarfile, zlib, the store's client: any of them ends the shard
                raise UserError(f"source: cannot read WebDataset shard {current[0]}: {_reason(exc)}") from exc
            yield sample

    def _remote_samples(self, urls: list[str]) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        # one remote pattern is passed as a string so webdataset expands it
        ds = wds.WebDataset(urls[0] if len(urls) == 1 else urls, shardshuffle=False, empty_check=False)
        it = iter(ds)
        while True:
            try:
                sample = next(it)
            except StopIteration:
                return
            except (OSError, ValueError, tarfile.TarError) as exc:
                raise UserError(f"source: cannot read WebDataset shards {self.spec.path}: {exc}") from exc
            yield sample

    def _items(self) -> Iterator[Item]:
        seen: set[str] = set()
        for sample in self._samples():
            yield self._item(sample, seen)

    def _plan(self) -> list[tuple[str, list[str]]] | None:
        """Per local or store tar: the sample names in tar order, from the tar headers only; None for remote shards."""
        if not hasattr(self, "_planned"):
            urls = self.shard_urls()
            if REMOTE.match(urls[0]):
                self._planned = None
            elif storage.is_url(urls[0]):  # a store: one round trip per tar, so several tars at once
                with ThreadPoolExecutor(min(8, len(urls))) as pool:
                    self._planned = list(zip(urls, pool.map(tar_sample_names, urls), strict=True))
            else:
                self._planned = [(url, tar_sample_names(url)) for url in urls]
        return self._planned

    def size(self) -> int | None:
        plan = self._plan()
        return None if plan is None else sum(len(names) for _, names in plan)

    def _slice(self, start: int, stop: int) -> Iterator[Item]:
        """Read only the tars that hold positions [start, stop); keys come from every tar's header listing."""
        plan = self._plan()
        if plan is None:
            yield from super()._slice(start, stop)
            return
        keys, first, urls = self._plan_keys(plan), 0, []
        for url, names in plan:
            if first < stop and first + len(names) > start:
                urls.append(url)
                if len(urls) == 1:
                    skip = start - first
            first += len(names)
        if not urls:
            return
        position = start
        for n, sample in enumerate(self._samples(urls)):
            if n < skip:
                continue
            if position >= stop:
                return
            raw, key = keys[position]
            if sample["__key__"] != raw:
                raise UserError(f"source: {self.spec.path}: sample {position} is {sample['__key__']!r} in the "
                                f"tar stream but {raw!r} in the tar headers; cannot cut it into shards")
            yield self._item(sample, set(), key)
            position += 1

    def _plan_keys(self, plan: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
        """(sample name, key) for every position, deduplicated exactly as a full read does."""
        seen: set[str] = set()
        return [(name, self._key({"__key__": name}, PurePosixPath(url).name, seen))
                for url, names in plan for name in names]

    def _image_field(self, sample: dict[str, Any]) -> str | None:
        col = self.spec.image_column
        if col in sample and not col.startswith("__"):
            return col
        for field in sample:
            if not field.startswith("__") and member_ext(field) in IMAGE_EXTS:
                return field
        return None

    def _label_field(self, sample: dict[str, Any]) -> str | None:
        col = self.spec.label_column
        if not col:
            return None
        if col in sample:
            return col
        return next((f for f in sample if not f.startswith("__") and member_ext(f) == col.lower()), None)

    def _key(self, sample: dict[str, Any], shard: str, seen: set[str]) -> str:
        key = safe_key(sample["__key__"])
        if key in seen:  # the same sample name in two shards
            key = safe_key(f"{PurePosixPath(shard).name.split('.')[0]}_{sample['__key__']}")
        base, n = key, 2
        while key in seen:
            key = f"{base}_{n}"
            n += 1
        seen.add(key)
        return key

    def _item(self, sample: dict[str, Any], seen: set[str], key: str | None = None) -> Item:
        shard = PurePosixPath(str(sample.get("__url__", ""))).name
        key = key or self._key(sample, shard, seen)
        field = self._image_field(sample)
        ref = {"tar": shard, "member": f"{sample['__key__']}.{field}" if field else None}
        reference: list[str] | None = None
        error: str | None = None
        detail = ""
        label_field = self._label_field(sample)
        if label_field:
            try:
                names = parse_labels(sample[label_field], label_field)
                reference = self.map_labels(names, f"{shard}: {sample['__key__']}.{label_field}")
            except ValueError as exc:
                error, detail = "source", str(exc)
        image: bytes | None = None
        ext = ""
        if field is None:
            error, detail = "missing", f"sample {sample['__key__']!r} in {shard} has no image member"
        else:
            image, ext = bytes(sample[field]), member_ext(field)
            if not image:
                image, error, detail = None, "empty", f"{sample['__key__']}.{field} in {shard} has zero bytes"
        return Item(key=key, image=image, ext=ext, ref=ref, reference=reference, error=error, detail=detail)


def open_shard(url: str) -> IO[bytes]:
    """A local tar or a store object, opened for reading (fsspec files seek, so tar headers can be skipped to)."""
    if not storage.is_url(url):
        return open(url, "rb")
    fs, path = storage.url_fs(url)
    return fs.open(path, "rb")


def _streams(urls: list[str], current: list[str]) -> Iterator[dict[str, Any]]:
    """webdataset's url+stream pairs, one open shard at a time; `current[0]` names the one being read.

    A store's tar is downloaded to a temporary file while the one before it is read (reading it straight
    from the store would make tagging wait on every range request); at most two are on disk at a time."""
    with tempfile.TemporaryDirectory(prefix="tagllm-tars-") as tmp, ThreadPoolExecutor(1) as pool:
        def fetch(n: int) -> Future | None:
            if n >= len(urls) or not storage.is_url(urls[n]):
                return None
            return pool.submit(_download, urls[n], Path(tmp) / f"{n}.tar")

        ahead = fetch(0)
        for n, url in enumerate(urls):
            current[0] = url
            fetched, ahead = ahead, fetch(n + 1)
            try:
                stream = open(fetched.result(), "rb") if fetched is not None else open_shard(url)
            except Exception as exc:
                raise UserError(f"source: cannot read WebDataset shard {storage.failure(exc, url)}") from exc
            with stream:
                yield {"url": url, "stream": stream}
            if fetched is not None:
                Path(stream.name).unlink(missing_ok=True)


def _download(url: str, dest: Path) -> Path:
    fs, path = storage.url_fs(url)
    fs.get_file(path, str(dest))
    return dest


def _reason(exc: BaseException) -> str:
    """First line of an error that webdataset may have extended with (stream, url) args."""
    first = exc.args[0] if exc.args else ""
    text = str(first).strip().splitlines()[0] if str(first).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def store_shards(raw: str) -> list[str]:
    """Shard URLs of a store path: one tar, a prefix of tars (by name), or a brace pattern (each shard checked)."""
    fs, path = storage.url_fs(raw)
    try:
        if "{" in raw:
            from braceexpand import braceexpand  # a dependency of webdataset

            urls = list(braceexpand(raw))
            paths = [storage.url_fs(url)[1] for url in urls]
            present: set[str] = set()
            for parent in sorted({posixpath.dirname(p) for p in paths}):
                fs.invalidate_cache(parent)
                present |= set(fs.ls(parent, detail=False)) if fs.isdir(parent) else set()
            absent = [url for url, p in zip(urls, paths, strict=True) if p not in present]
            if absent:
                raise UserError(f"source.path: {len(absent)} shard(s) of {raw} not found, e.g. {absent[0]}")
            return urls
        fs.invalidate_cache(path)
        if fs.info(path)["type"] != "directory":
            return [raw]
        names = sorted(e["name"] for e in fs.ls(path, detail=True)
                       if e["type"] == "file" and e["name"].endswith(SHARD_SUFFIXES))
    except UserError:
        raise
    except Exception as exc:  # no bucket, no permission, no endpoint: the store's own error, in one line
        raise UserError(f"source.path: {storage.failure(exc, raw)}") from exc
    if not names:
        raise UserError(f"source.path: no .tar shards in {raw}")
    return [str(fs.unstrip_protocol(name)) for name in names]


def tar_sample_names(path: str) -> list[str]:
    """Sample names of one tar in order, grouped as webdataset groups members, reading headers only."""
    from webdataset.tariterators import base_plus_ext, meta_prefix, meta_suffix

    names: list[str] = []
    try:
        with open_shard(path) as f, tarfile.open(fileobj=f, mode="r:*") as tar:
            for info in tar:
                name = info.name
                if not info.isreg() or ("/" not in name and name.startswith(meta_prefix)
                                        and name.endswith(meta_suffix)) or re.match(r"__[^/]*__($|/)", name):
                    continue
                prefix, _ = base_plus_ext(name)
                if prefix is not None and (not names or names[-1] != prefix):
                    names.append(prefix)
                tar.members = []  # keep memory flat on tars with many members
    except (OSError, tarfile.TarError) as exc:
        raise UserError(f"source: cannot read WebDataset shard {path}: {exc}") from exc
    except Exception as exc:  # a store client's error that is no OSError
        raise UserError(f"source: cannot read WebDataset shard {storage.failure(exc, path)}") from exc
    return names


def parse_labels(data: bytes, field: str) -> list[Any]:
    """Label names from a member: JSON (a list, or an object with 'labels') or text split on ',' ';' newlines."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{field}: labels are not UTF-8 text") from exc
    if member_ext(field) == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{field}: not valid JSON ({exc.msg})") from exc
        if isinstance(value, dict):
            value = value.get("labels")
        if isinstance(value, str):
            return split_label_text(value)
        if not isinstance(value, list):
            raise ValueError(f"{field}: expected a list of labels or an object with a 'labels' list")
        return value
    return [name for line in text.splitlines() for name in split_label_text(line)]
