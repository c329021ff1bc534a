"""COCO reader: images of an instances JSON, with the set of annotated categories as human labels.

The JSON is one file and is loaded once; the image → categories index is built from it up front.
Image bytes are read lazily, one file at a time, in image-id order (stable across runs).
An image with no annotations has the reference [] (COCO annotates its 80 categories exhaustively).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from builder.errors import UserError
from builder.records import Item
from builder.sources.base import Source
from builder.sources.folder import read_image_file, safe_key, split_ext

if TYPE_CHECKING:
    from builder.recipe.model import SourceSpec
    from builder.recipe.vocab import Vocabulary


class CocoSource(Source):
    """`spec.annotations` (instances JSON) over the image folder `spec.path`."""

    kind = "coco"

    def __init__(self, spec: SourceSpec, vocab: Vocabulary, base_dir: Path):
        super().__init__(spec, vocab, base_dir)
        if not spec.annotations:
            raise UserError("source.annotations: a COCO source needs the instances JSON file")
        self.annotations = self.resolve(spec.annotations)
        if not self.annotations.is_file():
            raise UserError(f"source.annotations: file not found: {self.annotations}")
        self.root = self.resolve(spec.path)
        if not self.root.is_dir():
            raise UserError(f"source.path: not a folder: {self.root}")

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["annotations"] = str(self.annotations)
        return out

    def _load(self) -> dict[str, Any]:
        try:
            with self.annotations.open(encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.annotations}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise UserError(f"{self.annotations}: not a COCO instances file (no 'images' list)")
        return data

    def _plan(self) -> tuple[list[dict[str, Any]], list[str], dict[Any, set[Any]], dict[Any, str]]:
        """(images in id order, their keys, image id -> category ids, category names), computed once."""
        if getattr(self, "_planned", None) is None:
            data = self._load()
            names = {c["id"]: c["name"] for c in data.get("categories", [])}
            per_image: dict[Any, set[Any]] = {}
            for ann in data.get("annotations", []):
                per_image.setdefault(ann.get("image_id"), set()).add(ann.get("category_id"))
            images = sorted(data["images"], key=lambda im: im["id"])
            del data  # keep only what the stream needs: the annotation list can be large
            self._planned = (images, _keys(images), per_image, names)
        return self._planned

    def _items(self) -> Iterator[Item]:
        return self._slice(0, len(self._plan()[0]))

    def size(self) -> int:
        return len(self._plan()[0])

    def _slice(self, start: int, stop: int) -> Iterator[Item]:
        images, keys, per_image, names = self._plan()
        for image, key in zip(images[start:stop], keys[start:stop]):
            yield self._item(image, key, per_image.get(image["id"], set()), names)

    def _item(self, image: dict[str, Any], key: str, cat_ids: set[Any], names: dict[Any, str]) -> Item:
        file_name = str(image.get("file_name", ""))
        image_id = image["id"]
        ref = {"file": file_name, "image_id": image_id}
        ext = split_ext(file_name)[1]
        reference: list[str] | None = None
        error: str | None = None
        detail = ""
        try:
            unknown = sorted(str(c) for c in cat_ids if c not in names)
            if unknown:
                raise ValueError(f"{file_name}: category id {unknown[0]} is not in the file's categories")
            reference = self.map_labels([names[c] for c in sorted(cat_ids)], f"{file_name}")
        except ValueError as exc:
            error, detail = "source", str(exc)
        if not file_name:
            return Item(key, None, ext, ref, reference, "source", f"image id {image_id} has no file_name")
        on_disk = PurePosixPath(file_name)
        if self.spec.path_tail:  # Objects365 v2: images/v1/patch8/x.jpg is patch8/x.jpg in the download
            on_disk = PurePosixPath(*on_disk.parts[-self.spec.path_tail:])
        data, read_error, read_detail = read_image_file(self.root / on_disk)
        if read_error:
            error, detail = read_error, read_detail
        return Item(key=key, image=data, ext=ext, ref=ref, reference=reference, error=error, detail=detail)


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
