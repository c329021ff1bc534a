"""Image folder reader, with optional human labels in an imagefolder-style metadata file.

The layout follows Hugging Face `imagefolder`: images anywhere below the folder, and labels in
`metadata.jsonl` or `metadata.csv` whose `file_name` column is relative to the metadata file's
own folder. Only paths are listed up front (keys must be unique before the first item goes out);
image bytes are read one file at a time as the stream is consumed.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from builder.errors import UserError
from builder.records import Item
from builder.sources.base import require_file
from builder.sources.listed import ListedSource

if TYPE_CHECKING:
    from builder.recipe.model import SourceSpec
    from builder.recipe.vocab import Vocabulary

IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
DEFAULT_METADATA = ("metadata.jsonl", "metadata.csv")


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
    name = shown if shown is not None else str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "missing", f"file not found: {name}"
    except OSError as exc:
        return None, "missing", f"cannot read {name}: {exc.strerror or type(exc).__name__}"
    if not data:
        return None, "empty", f"zero bytes: {name}"
    return data, None, ""


def split_label_text(text: str) -> list[str]:
    """'cat; dog' or 'cat,dog' -> ['cat', 'dog'] (';' wins when both appear)."""
    sep = ";" if ";" in text else ","
    return [part.strip() for part in text.split(sep) if part.strip()]


def list_images(root: Path) -> list[str]:
    """Relative posix paths of every image below root, sorted; hidden files and folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            if split_ext(name)[1] in IMAGE_EXTS:
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


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
        self.root = self.image_folder()
        self.metadata_path = self._find_metadata()
        self.label_column = spec.label_column or "labels"

    def _find_metadata(self) -> Path | None:
        if self.spec.metadata:
            p = Path(self.spec.metadata).expanduser()
            return require_file(Path(os.path.normpath(p if p.is_absolute() else self.root / p)), "source.metadata")
        for name in DEFAULT_METADATA:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def _read_listing(self) -> list[_Entry]:
        rows = self._read_metadata() if self.metadata_path else {}
        rels = list_images(self.root)
        if rows:
            rels = sorted(set(rels) | set(rows))
        keys = unique_keys(rels)
        return [_Entry(rel, keys[rel], rel in rows, rows.get(rel)) for rel in rels]

    def _item_for(self, entry: _Entry) -> Item:
        rel = entry.rel
        reference: list[str] | None = None
        error: str | None = None
        detail = ""
        if entry.listed:
            try:
                reference = self.map_labels(self._row_labels(entry.value), f"{self.metadata_path.name}: {rel}")
            except ValueError as exc:
                error, detail = "source", str(exc)
        image, read_error, read_detail = read_image_file(self.root / rel, rel)
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
        path = self.metadata_path
        assert path is not None
        rows = _jsonl_rows(path) if path.suffix.lower() == ".jsonl" else _csv_rows(path)
        out: dict[str, Any] = {}
        for where, row in rows:
            name = row.get("file_name")
            if not isinstance(name, str) or not name.strip():
                raise UserError(f"{where}: a 'file_name' is needed on every row")
            rel = self._relative(path.parent / name.strip(), where)
            if rel in out:
                raise UserError(f"{where}: {name!r} is listed twice")
            out[rel] = row.get(self.label_column)
        return out

    def _relative(self, target: Path, where: str) -> str:
        try:
            return Path(os.path.normpath(target)).relative_to(os.path.normpath(self.root)).as_posix()
        except ValueError:
            raise UserError(f"{where}: {target} is outside the image folder {self.root}") from None


def _jsonl_rows(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
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


def _csv_rows(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            yield f"{path}:{n}", row
