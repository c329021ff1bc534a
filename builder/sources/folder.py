"""Image folder reader, with optional human labels in an imagefolder-style metadata file.

The layout follows Hugging Face `imagefolder`: images anywhere below the folder, and labels in
`metadata.jsonl` or `metadata.csv` whose `file_name` column is relative to the metadata file's
own folder. Only paths are listed up front (keys must be unique before the first item goes out);
image bytes are read one file at a time as the stream is consumed.

`spec.path` may also be an object-store prefix (s3://bucket/photos, gs://...): it is listed and read
through fsspec (`trees.StoreTree`) with the same relative paths, so its keys and refs equal those of
a local copy of the same folder.
"""

from __future__ import annotations

import csv
import json
import posixpath
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from builder import storage
from builder.errors import UserError
from builder.records import Item
from builder.sources.listed import ListedSource
from builder.sources.trees import LocalTree, StoreTree, Tree

if TYPE_CHECKING:
    from builder.recipe.model import SourceSpec
    from builder.recipe.vocab import Vocabulary

IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
DEFAULT_METADATA = ("metadata.jsonl", "metadata.csv")
READ_AHEAD, CHUNKS_AHEAD = 32, 3  # objects fetched together from an object store; such fetches under way


def safe_key(name: str) -> str:
    """A key usable as a WebDataset sample name: no '/' (folders) and no '.' (extension split)."""
    return name.replace("\\", "_").replace("/", "_").replace(".", "_")


def split_ext(rel: str) -> tuple[str, str]:
    """'a/b.JPG' -> ('a/b', 'jpg'); a name without a suffix has ext ''."""
    if "//" not in rel and "./" not in rel and not rel.endswith("/"):  # already normal: plain string work
        name = rel.rpartition("/")[2]
        dot = name.rfind(".")
        if 0 < dot < len(name) - 1:  # as pathlib: a leading or trailing dot makes no suffix
            return rel[: len(rel) - len(name) + dot], name[dot + 1:].lower()
        return rel, ""
    p = PurePosixPath(rel)
    ext = p.suffix[1:].lower()
    return (str(p.with_suffix("")) if p.suffix else rel), ext


def unique_keys(rels: list[str]) -> dict[str, str]:
    """Relative path -> key, unique and independent of listing order.

    Paths whose plain keys collide (a.jpg and a.png) all get their extension appended; any clash
    left after that (a/b.jpg and a_b.jpg) is numbered in sorted path order.
    """
    plain = {rel: safe_key(split_ext(rel)[0]) for rel in rels}
    counts = Counter(plain.values())
    keys = {}
    for rel in rels:
        key = plain[rel]
        if counts[key] > 1:
            key = f"{key}_{split_ext(rel)[1]}" if split_ext(rel)[1] else key
        keys[rel] = key
    seen: set[str] = set()
    for rel in sorted(rels):
        key = base = keys[rel]
        n = 2
        while key in seen:
            key = f"{base}_{n}"
            n += 1
        seen.add(key)
        keys[rel] = key
    return keys


def read_image_file(path: Path, shown: str | None = None) -> tuple[bytes | None, str | None, str]:
    """(bytes, error, detail): a failed read becomes an error reason instead of an exception.

    `shown` is how the detail names the file (a path relative to the source, so published
    indexes hold no local absolute paths).
    """
    return guarded_read(path.read_bytes, shown if shown is not None else str(path))


def guarded_read(read: Callable[[], bytes], name: str) -> tuple[bytes | None, str | None, str]:
    """`read()` as (bytes, error, detail), the file called `name` in the detail."""
    try:
        data = read()
    except FileNotFoundError:
        return None, "missing", f"file not found: {name}"
    except OSError as exc:
        return None, "missing", f"cannot read {name}: {exc.strerror or str(exc) or type(exc).__name__}"
    if not data:
        return None, "empty", f"zero bytes: {name}"
    return data, None, ""


def _given(data: bytes | OSError) -> bytes:
    if isinstance(data, OSError):
        raise data
    return data


def split_label_text(text: str) -> list[str]:
    """'cat; dog' or 'cat,dog' -> ['cat', 'dog'] (';' wins when both appear)."""
    sep = ";" if ";" in text else ","
    return [part.strip() for part in text.split(sep) if part.strip()]


def list_images(tree: Tree) -> list[str]:
    """Relative posix paths of every image below the tree's root, sorted; hidden files and folders skipped."""
    return [rel for rel in tree.files() if split_ext(rel.rpartition("/")[2])[1] in IMAGE_EXTS]


@dataclass(slots=True)
class _Entry:
    rel: str
    key: str
    listed: bool  # the metadata file has a row for the image
    value: Any = None  # that row's label value, as written


class FolderSource(ListedSource):
    """Every image file below `spec.path`, plus each metadata row naming a file not found (one item each);
    labels from the metadata file when there is one."""

    kind = "folder"

    def __init__(self, spec: SourceSpec, vocab: Vocabulary, base_dir: Path):
        super().__init__(spec, vocab, base_dir)
        self.tree: Tree = StoreTree(spec.path) if storage.is_url(spec.path) else LocalTree(self.image_folder())
        self.metadata_path = self._find_metadata()
        self.label_column = spec.label_column or "labels"

    def _find_metadata(self) -> str | None:
        tree = self.tree
        if self.spec.metadata:
            path = tree.locate(self.spec.metadata)
            if not tree.is_file(path):
                raise UserError(f"source.metadata: file not found: {tree.shown(path)}")
            return path
        return next((tree.join(n) for n in DEFAULT_METADATA if tree.is_file(tree.join(n))), None)

    def _read_listing(self) -> list[_Entry]:
        rows = self._read_metadata() if self.metadata_path else {}
        rels = list_images(self.tree)
        if not rels and not rows and isinstance(self.tree, StoreTree):  # a prefix that does not exist lists nothing
            raise UserError(f"source.path: no images under {self.tree.url}")
        if rows:
            rels = sorted(set(rels) | set(rows))
        keys = unique_keys(rels)
        return [_Entry(rel, keys[rel], rel in rows, rows.get(rel)) for rel in rels]

    def _produce(self, entries: list[_Entry]) -> Iterator[Item]:
        """From an object store, objects are fetched READ_AHEAD at a time (concurrently), CHUNKS_AHEAD such
        fetches ahead of the items being tagged: one object at a time would make every item wait a round trip."""
        if not isinstance(self.tree, StoreTree):
            yield from super()._produce(entries)
            return
        chunks = [entries[i:i + READ_AHEAD] for i in range(0, len(entries), READ_AHEAD)]
        with ThreadPoolExecutor(CHUNKS_AHEAD, thread_name_prefix="tagllm-read-ahead") as pool:
            ahead = deque(pool.submit(self.tree.read_many, [e.rel for e in c]) for c in chunks[:CHUNKS_AHEAD])
            for n, chunk in enumerate(chunks):
                blobs = ahead.popleft().result()
                if n + CHUNKS_AHEAD < len(chunks):
                    ahead.append(pool.submit(self.tree.read_many, [e.rel for e in chunks[n + CHUNKS_AHEAD]]))
                for entry in chunk:
                    yield self._item_for(entry, blobs.get(entry.rel))

    def _item_for(self, entry: _Entry, data: bytes | OSError | None = None) -> Item:
        """`data`: the image's bytes (or the error reading them) when fetched ahead; else read here."""
        rel = entry.rel
        reference: list[str] | None = None
        error: str | None = None
        detail = ""
        if entry.listed:
            try:
                where = f"{posixpath.basename(self.metadata_path or '')}: {rel}"
                reference = self.map_labels(self._row_labels(entry.value), where)
            except ValueError as exc:
                error, detail = "source", str(exc)
        read = (lambda: self.tree.read(rel)) if data is None else (lambda: _given(data))
        image, read_error, read_detail = guarded_read(read, rel)
        if read_error and (error is None or read_error == "missing"):
            error, detail = read_error, read_detail
        return Item(key=entry.key, image=image, ext=split_ext(rel)[1], ref={"path": rel}, reference=reference,
                    error=error, detail=detail)

    def _row_labels(self, value: Any) -> list[Any]:
        if value is None:
            raise ValueError(f"no {self.label_column!r} value")
        if isinstance(value, str):
            return split_label_text(value)
        if isinstance(value, list):
            return value
        raise ValueError(f"{self.label_column!r} must be a list of names or a separated string, got {value!r}")

    def _read_metadata(self) -> dict[str, Any]:
        """Relative image path (to the folder) -> raw label value, for every metadata row."""
        path, tree = self.metadata_path, self.tree
        assert path is not None
        shown = tree.shown(path)
        with tree.open_text(path) as f:
            rows = _jsonl_rows(f, shown) if path.lower().endswith(".jsonl") else _csv_rows(f, shown)
            out: dict[str, Any] = {}
            for where, row in rows:
                name = row.get("file_name")
                if not isinstance(name, str) or not name.strip():
                    raise UserError(f"{where}: a 'file_name' is needed on every row")
                target = posixpath.join(posixpath.dirname(path), name.strip())
                rel = tree.relative(target)
                if rel is None:
                    raise UserError(f"{where}: {tree.shown(posixpath.normpath(target))} is outside the image "
                                    f"folder {tree.shown(tree.root)}")
                if rel in out:
                    raise UserError(f"{where}: {name!r} is listed twice")
                out[rel] = row.get(self.label_column)
        return out


def _jsonl_rows(f: Iterable[str], path: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: each line must be a JSON object")
        yield f"{path}:{n}", row


def _csv_rows(f: Iterable[str], path: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for n, row in enumerate(csv.DictReader(f), 2):
        yield f"{path}:{n}", row
