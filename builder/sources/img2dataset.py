"""img2dataset output as a source: one item per url img2dataset was given, downloaded or not.

`spec.path` is the folder `img2dataset --output_format webdataset` wrote, local or an object-store
URL (s3://, gs://; read through fsspec, so both take one code path). Its shards are `00000.tar`
(the successes: `{key}.jpg`, `{key}.txt` caption, `{key}.json` meta) beside `00000.parquet` (one row
per url of the shard, failures included, in the order img2dataset wrote them, which is also the tar's
order). Items come in shard order, then parquet row order; keys are img2dataset's own.

A row img2dataset recorded as failed becomes an item without an image and with the reason
`download` (failed_to_download: HTTP errors, timeouts) or `resize` (failed_to_resize: undecodable
bytes, size filters), its error_message as detail, so the build records it instead of dropping it.
A success row whose tar sample is absent or unreadable is a `missing` item. A shard without its
parquet (an older img2dataset, or one deleted) is read from its tar alone: every sample, as a success.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from builder.errors import UserError
from builder.recipe.model import redact_url
from builder.records import Item
from builder.sources.base import Source
from builder.sources.folder import IMAGE_EXTS, safe_key
from builder.storage import failure, is_url, url_fs

SHARD = re.compile(r"^(\d+)\.(tar|parquet)$")  # img2dataset names shards by number, zero-padded
REASONS = {"failed_to_download": "download", "failed_to_resize": "resize"}  # img2dataset status -> reason
META = ("key", "status", "error_message", "caption", "url", "original_width", "original_height")


@dataclass
class Shard:
    """One img2dataset shard: its files (paths inside the filesystem) and its sample names in order."""

    stem: str
    tar: str | None
    parquet: str | None
    names: list[str]  # img2dataset keys: parquet rows, or tar samples when there is no parquet


def sample_name(member: str) -> tuple[str, str]:
    """('000012', 'jpg') for '000012.jpg': the sample is the name up to its first dot, as in WebDataset."""
    base = member.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    return key, ext.lower()


class Img2DatasetSource(Source):
    """Every parquet row of every shard (every tar sample where a shard has no parquet)."""

    kind = "img2dataset"

    def _fs(self) -> tuple[Any, str]:
        if not hasattr(self, "_root"):
            raw = self.spec.path
            self._root = url_fs(raw if is_url(raw) else str(self.resolve(raw)))
        return self._root

    def _open(self, path: str) -> Any:
        return self._fs()[0].open(path, "rb")

    def shards(self) -> list[Shard]:
        """The shards in number order, with their names; read once (parquet key columns, tar headers)."""
        if not hasattr(self, "_shards"):
            fs, root = self._fs()
            try:
                entries = fs.ls(root, detail=False) if fs.isdir(root) else None
            except OSError as exc:
                raise UserError(f"source.path: {failure(exc, self.spec.path)}") from exc
            if entries is None:
                raise UserError(f"source.path: not an img2dataset output folder: {self.spec.path}")
            files: dict[str, dict[str, str]] = {}
            for entry in entries:
                m = SHARD.match(entry.rstrip("/").rsplit("/", 1)[-1])
                if m:
                    files.setdefault(m.group(1), {})[m.group(2)] = entry
            if not files:
                raise UserError(f"source.path: no img2dataset shards (00000.tar, 00000.parquet) in {self.spec.path}")
            self._shards = [Shard(stem, f.get("tar"), f.get("parquet"), self._shard_names(f))
                            for stem, f in sorted(files.items(), key=lambda kv: (int(kv[0]), kv[0]))]
        return self._shards

    def _shard_names(self, files: dict[str, str]) -> list[str]:
        if "parquet" in files:
            return ["" if k is None else str(k) for k in self._rows(files["parquet"], ["key"])["key"]]
        names: list[str] = []
        try:
            for key, _ in self._tar_members(files["tar"], headers_only=True):
                if not names or names[-1] != key:
                    names.append(key)
        except (OSError, EOFError, tarfile.TarError) as exc:  # without a parquet, the tar is the only list
            raise UserError(f"source: cannot list img2dataset shard {files['tar']} (and it has no parquet): "
                            f"{type(exc).__name__}: {exc}") from exc
        return names

    def _rows(self, path: str, columns: list[str]) -> dict[str, list[Any]]:
        """The named columns of a shard's parquet (absent ones as None), as python lists."""
        import pyarrow.parquet as pq

        try:
            with self._open(path) as f:
                pf = pq.ParquetFile(f)
                table = pf.read(columns=[c for c in columns if c in pf.schema_arrow.names])
        except (OSError, ValueError) as exc:  # pyarrow's errors are both
            raise UserError(f"source: cannot read img2dataset parquet {path}: {exc}") from exc
        n = table.num_rows
        return {c: table.column(c).to_pylist() if c in table.column_names else [None] * n for c in columns}

    def size(self) -> int:
        return sum(len(s.names) for s in self.shards())

    def keys(self) -> list[str]:
        """The item key of every position: img2dataset's key, made unique if two shards repeat one."""
        if not hasattr(self, "_keys"):
            seen: set[str] = set()
            out = []
            for shard in self.shards():
                for name in shard.names:
                    key = base = safe_key(name or "") or f"{shard.stem}_{len(out)}"
                    n = 2
                    while key in seen:
                        key, n = f"{base}_{n}", n + 1
                    seen.add(key)
                    out.append(key)
            self._keys = out
        return self._keys

    def _items(self) -> Iterator[Item]:
        return self._slice(0, self.size())

    def _slice(self, start: int, stop: int) -> Iterator[Item]:
        """Read only the shards that hold positions [start, stop)."""
        keys, first = self.keys(), 0
        for shard in self.shards():
            n = len(shard.names)
            lo, hi = max(start, first), min(stop, first + n)
            if lo < hi:
                reader = self._from_parquet if shard.parquet else self._from_tar
                yield from reader(shard, lo - first, hi - first, keys[first:first + n])
            first += n

    def _from_parquet(self, shard: Shard, lo: int, hi: int, keys: list[str]) -> Iterator[Item]:
        cols = self._rows(shard.parquet or "", list(META))
        rows = [{c: cols[c][i] for c in META} for i in range(lo, hi)]
        wanted = {r["key"] for r in rows if r["status"] == "success"}
        samples = self._samples(shard, wanted)
        pending: dict[str, dict[str, bytes]] = {}
        problem = None if shard.tar else f"{shard.stem}.tar does not exist"
        for i, row in enumerate(rows, lo):
            ref = {"tar": f"{shard.stem}.tar", "member": None, "parquet": f"{shard.stem}.parquet", "row": i}
            item = Item(key=keys[i], image=None, ext="", ref=ref, caption=row["caption"], url=_public(row["url"]),
                        original_width=row["original_width"], original_height=row["original_height"])
            if row["status"] != "success":
                item.error = REASONS.get(row["status"], "download")
                item.detail = f"img2dataset {row['status']}: {row['error_message'] or 'no error message'}"
                yield item
                continue
            members = pending.pop(row["key"], None)
            while members is None and problem is None:
                try:
                    name, found = next(samples)
                except StopIteration:
                    break
                except (OSError, EOFError, tarfile.TarError) as exc:
                    problem = f"cannot read {shard.stem}.tar: {type(exc).__name__}: {exc}"
                    break
                if name == row["key"]:
                    members = found
                else:
                    pending[name] = found
            if members is None:
                item.error, item.detail = "missing", (
                    f"img2dataset recorded {row['key']!r} as a success but "
                    + (problem or f"{shard.stem}.tar holds no sample of that key"))
                yield item
                continue
            yield self._fill(item, row["key"], members, shard)

    def _from_tar(self, shard: Shard, lo: int, hi: int, keys: list[str]) -> Iterator[Item]:
        samples = self._samples(shard, set(shard.names[lo:hi]))
        problem: str | None = None
        for i in range(lo, hi):
            item = Item(key=keys[i], image=None, ext="", ref={"tar": f"{shard.stem}.tar", "member": None})
            found = None
            if problem is None:
                try:
                    found = next(samples)
                except StopIteration:
                    problem = f"{shard.stem}.tar ended before it"
                except (OSError, EOFError, tarfile.TarError) as exc:
                    problem = f"cannot read {shard.stem}.tar: {type(exc).__name__}: {exc}"
            if found is None:
                item.error, item.detail = "missing", f"sample {shard.names[i]!r}: {problem}"
                yield item
                continue
            members = found[1]
            meta = _json(members.get("json"))
            item.url = _public(meta.get("url"))
            item.original_width, item.original_height = meta.get("original_width"), meta.get("original_height")
            caption = members.get("txt")
            item.caption = caption.decode("utf-8", "replace") if caption is not None else meta.get("caption")
            yield self._fill(item, shard.names[i], members, shard)

    def _fill(self, item: Item, name: str, members: dict[str, bytes], shard: Shard) -> Item:
        """The image of a sample found in the tar (or why it cannot be used)."""
        ext = next((e for e in members if e in IMAGE_EXTS), None)
        if ext is None:
            item.error, item.detail = "missing", f"sample {name!r} in {shard.stem}.tar has no image member"
            return item
        item.ref["member"], item.ext = f"{name}.{ext}", ext
        if not members[ext]:
            item.error, item.detail = "empty", f"{name}.{ext} in {shard.stem}.tar has zero bytes"
            return item
        item.image = members[ext]
        return item

    def _samples(self, shard: Shard, wanted: set[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
        """(name, {ext: bytes}) of the wanted samples in tar order; other samples' bytes are never read."""
        if shard.tar is None:
            return
        current: str | None = None
        members: dict[str, bytes] = {}
        for key, data in self._tar_members(shard.tar, wanted=wanted):
            if key != current and current is not None:
                yield current, members
                members = {}
            current = key
            members.update(data)
        if current is not None:
            yield current, members

    def _tar_members(self, path: str, wanted: set[str] | None = None,
                     headers_only: bool = False) -> Iterator[tuple[str, dict[str, bytes]]]:
        """(sample name, {ext: bytes}) per regular member, streaming the tar once (read in order, remote too)."""
        with self._open(path) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                tar.members = []  # keep memory flat on tars with many members
                key, ext = sample_name(info.name)
                if headers_only:
                    yield key, {}
                    continue
                if wanted is not None and key not in wanted:
                    continue
                handle = tar.extractfile(info)
                yield key, {ext: handle.read() if handle else b""}


def _json(data: bytes | None) -> dict[str, Any]:
    """img2dataset's sample meta; {} when absent or not a JSON object."""
    if not data:
        return {}
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _public(url: str | None) -> str | None:
    """A url as the dataset may publish it: no user:password@ (img2dataset keeps what the url list had)."""
    return redact_url(url) if url else url
