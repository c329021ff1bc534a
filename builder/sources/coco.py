"""COCO reader: images of an instances JSON, with the set of annotated categories as human labels.

The JSON is one file and is loaded once; the image → categories index is built from it up front.
Image bytes are read lazily, one file at a time, in image-id order (stable across runs).
An image with no annotations has the reference [] (COCO annotates its 80 categories exhaustively).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from builder.errors import UserError
from builder.records import Item
from builder.sources.base import require_file
from builder.sources.folder import read_image_file, safe_key, split_ext
from builder.sources.listed import ListedSource

if TYPE_CHECKING:
    from builder.recipe.model import SourceSpec
    from builder.recipe.vocab import Vocabulary


@dataclass
class _Entry:
    image_id: Any
    file_name: str
    key: str
    categories: list[str]  # names of the image's annotated categories, in category-id order
    problem: str = ""  # an annotation names a category id the file does not define


class CocoSource(ListedSource):
    """`spec.annotations` (instances JSON) over the image folder `spec.path`."""

    kind = "coco"

    def __init__(self, spec: SourceSpec, vocab: Vocabulary, base_dir: Path):
        super().__init__(spec, vocab, base_dir)
        self.annotations = require_file(self.annotations_path("a COCO source needs the instances JSON file"))
        self.root = self.image_folder()

    def _load(self) -> dict[str, Any]:
        try:
            with self.annotations.open(encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.annotations}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise UserError(f"{self.annotations}: not a COCO instances file (no 'images' list)")
        return data

    def _read_listing(self) -> list[_Entry]:
        """One entry per image in id order; the annotation list (which can be large) is not kept."""
        data = self._load()
        names = {c["id"]: c["name"] for c in data.get("categories", [])}
        per_image: dict[Any, set[Any]] = {}
        for ann in data.get("annotations", []):
            per_image.setdefault(ann.get("image_id"), set()).add(ann.get("category_id"))
        images = sorted(data["images"], key=lambda im: im["id"])
        entries = []
        for image, key in zip(images, _keys(images)):
            file_name = str(image.get("file_name", ""))
            cat_ids = per_image.get(image["id"], set())
            unknown = sorted(str(c) for c in cat_ids if c not in names)
            problem = f"{file_name}: category id {unknown[0]} is not in the file's categories" if unknown else ""
            known = sorted(c for c in cat_ids if c in names)
            entries.append(_Entry(image["id"], file_name, key, [names[c] for c in known], problem))
        return entries

    def _item_for(self, entry: _Entry) -> Item:
        file_name, image_id = entry.file_name, entry.image_id
        ref = {"file": file_name, "image_id": image_id}
        ext = split_ext(file_name)[1]
        reference: list[str] | None = None
        error: str | None = None
        detail = ""
        try:
            if entry.problem:
                raise ValueError(entry.problem)
            reference = self.map_labels(entry.categories, file_name)
        except ValueError as exc:
            error, detail = "source", str(exc)
        if not file_name:
            return Item(entry.key, None, ext, ref, reference, "source", f"image id {image_id} has no file_name")
        on_disk = PurePosixPath(file_name)
        if self.spec.path_tail:  # Objects365 v2: images/v1/patch8/x.jpg is patch8/x.jpg in the download
            on_disk = PurePosixPath(*on_disk.parts[-self.spec.path_tail:])
        data, read_error, read_detail = read_image_file(self.root / on_disk)
        if read_error:
            error, detail = read_error, read_detail
        return Item(key=entry.key, image=data, ext=ext, ref=ref, reference=reference, error=error, detail=detail)


def _keys(images: list[dict[str, Any]]) -> list[str]:
    """One key per image in id order: the file stem, or `stem_id` when an earlier image took it."""
    seen: set[str] = set()
    keys = []
    for image in images:
        file_name = str(image.get("file_name", ""))
        key = safe_key(PurePosixPath(file_name).stem) if file_name else f"{image['id']}"
        if key in seen:
            key = f"{key}_{image['id']}"
        seen.add(key)
        keys.append(key)
    return keys
