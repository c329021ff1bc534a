"""Open Images (V7) reader: human-verified image-level labels, positives and negatives.

Layout (the official downloads): `annotations` is an image-level labels CSV with the columns
`ImageID,Source,LabelName,Confidence` (e.g. `oidv7-val-annotations-human-imagelabels.csv`, or V5's
`validation-annotations-human-imagelabels-boxable.csv`); `classes` is a class descriptions CSV
(`LabelName,DisplayName`, e.g. `oidv7-class-descriptions-boxable.csv`; older copies have no header);
`path` is the folder of `<ImageID>.jpg` files (`validation/`). The images are the ImageIDs of the
labels file, in sorted order (the official files are sorted by ImageID), including images whose
labels all fall outside `classes` (their reference is then empty and nothing about them is verified).

Open Images is not exhaustively labeled: a person checked some classes per image and said yes
(Confidence 1) or no (Confidence 0). Positives become the reference; negatives are kept in the item's
`verified_absent` list, so `tagllm eval` counts only those as negatives and leaves the never-checked
labels out. Rows of classes outside `classes` are skipped (that file chooses the subset); a class
marked both present and absent for one image is left undecided. Labels are used as given: the
official challenge metric also expands them up the class hierarchy, which this reader does not.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import UserError
from builder.recipe.hierarchy import read_class_descriptions
from builder.records import VERIFIED_ABSENT, Item
from builder.sources.base import require_file
from builder.sources.folder import read_image_file
from builder.sources.listed import ListedSource

if TYPE_CHECKING:
    from builder.recipe.model import SourceSpec
    from builder.recipe.vocab import Vocabulary

COLUMNS = ("ImageID", "LabelName", "Confidence")


@dataclass
class _Entry:
    image_id: str
    yes: set[str] = field(default_factory=set)
    no: set[str] = field(default_factory=set)
    problem: str = ""


class OpenImagesSource(ListedSource):
    """`spec.annotations` (image-level labels CSV) with `spec.classes` over the image folder `spec.path`."""

    kind = "openimages"

    def __init__(self, spec: SourceSpec, vocab: Vocabulary, base_dir: Path):
        super().__init__(spec, vocab, base_dir)
        if not spec.annotations or not spec.classes:
            raise UserError("source: an openimages source needs annotations (labels CSV) "
                            "and classes (descriptions CSV)")
        self.labels_csv = require_file(self.resolve(spec.annotations))
        self.classes = read_class_descriptions(self.resolve(spec.classes))
        self.root = self.image_folder()

    def _read_listing(self) -> list[_Entry]:
        entries: dict[str, _Entry] = {}
        with self.labels_csv.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{self.labels_csv}: no column {missing[0]!r} (expected {','.join(COLUMNS)})")
            for line_no, row in enumerate(reader, start=2):
                entry = entries.setdefault(row["ImageID"], _Entry(row["ImageID"]))
                name = self.classes.get(row["LabelName"])
                if name is None:
                    continue
                confidence = (row["Confidence"] or "").strip()
                if confidence in ("1", "1.0"):
                    entry.yes.add(name)
                elif confidence in ("0", "0.0"):
                    entry.no.add(name)
                elif not entry.problem:
                    entry.problem = f"{self.labels_csv.name} line {line_no}: Confidence {confidence!r} is not 0 or 1"
        return [entries[k] for k in sorted(entries)]

    def _item_for(self, entry: _Entry) -> Item:
        ref: dict[str, Any] = {"file": f"{entry.image_id}.jpg", "image_id": entry.image_id}
        reference: list[str] | None = None
        error, detail = None, ""
        try:
            if entry.problem:
                raise ValueError(entry.problem)
            both = entry.yes & entry.no
            reference = self.map_labels(sorted(entry.yes - both), entry.image_id)
            ref[VERIFIED_ABSENT] = self.map_labels(sorted(entry.no - both), entry.image_id)
        except ValueError as exc:
            error, detail = "source", str(exc)
        data, read_error, read_detail = read_image_file(self.root / f"{entry.image_id}.jpg")
        if read_error:
            error, detail = read_error, read_detail
        return Item(key=entry.image_id, image=data, ext="jpg", ref=ref, reference=reference, error=error, detail=detail)
