"""PASCAL VOC reader: `ImageSets/Main/<split>.txt` gives the images, `Annotations/<id>.xml` their objects.

Layout (as in the VOCdevkit download): `path` is the year folder, e.g. `VOCdevkit/VOC2007`, holding
`Annotations/`, `ImageSets/Main/` and `JPEGImages/`. An image's human labels are the classes of its
objects. Objects marked `<difficult>1</difficult>` are the VOC benchmark's "difficult" cases: a class
seen only on difficult objects is neither a positive nor a negative for that image (its line in
`<class>_<split>.txt` says 0). With `difficult: ignore` (the default) such a class is left out of the
reference and the other classes are listed as verified absent, so `tagllm eval` scores it the way the
VOC benchmark does; `positive` / `negative` count it present / absent instead.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import UserError
from builder.records import VERIFIED_ABSENT, Item
from builder.sources.folder import read_image_file
from builder.sources.listed import ListedSource

if TYPE_CHECKING:
    from builder.recipe.model import SourceSpec
    from builder.recipe.vocab import Vocabulary


def voc_objects(xml_bytes: bytes, where: str) -> list[tuple[str, bool]]:
    """(class name, difficult) for every <object> of a VOC annotation file."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        raise ValueError(f"{where}: not valid XML ({exc})") from exc
    out = []
    for n, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ValueError(f"{where}: object {n} has no <name>")
        out.append((name, (obj.findtext("difficult") or "0").strip() == "1"))
    return out


class VocSource(ListedSource):
    """A VOC year folder; `spec.split` names the ImageSets/Main list."""

    kind = "voc"

    def __init__(self, spec: SourceSpec, vocab: Vocabulary, base_dir: Path):
        super().__init__(spec, vocab, base_dir)
        self.root = self.resolve(spec.path)
        self.split_file = self.root / "ImageSets" / "Main" / f"{spec.split}.txt"
        if not self.split_file.is_file():
            raise UserError(f"source.split: no split file {self.split_file} (expected VOCdevkit/VOC2007 layout)")

    def _read_listing(self) -> list[str]:
        ids = [line.split()[0] for line in self.split_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        dupes = len(ids) - len(set(ids))
        if dupes:
            raise UserError(f"{self.split_file}: {dupes} image ids listed twice")
        return ids

    def _labels(self, image_id: str) -> tuple[list[str], list[str] | None]:
        """(reference, verified absent) from the image's annotation file.

        Verified absent is None when every class is decided (no difficult-only class): then all
        classes outside the reference are negatives, as for any exhaustively labeled image.
        """
        xml_path = self.root / "Annotations" / f"{image_id}.xml"
        try:
            objects = voc_objects(xml_path.read_bytes(), f"Annotations/{image_id}.xml")
        except OSError as exc:
            raise ValueError(f"Annotations/{image_id}.xml: cannot read ({exc.strerror or exc})") from exc
        clear = {name for name, difficult in objects if not difficult}
        only_difficult = {name for name, _ in objects} - clear
        mode = self.spec.difficult
        present = self.map_labels(sorted(clear | (only_difficult if mode == "positive" else set())), image_id)
        unsure = set() if mode != "ignore" else set(self.map_labels(sorted(only_difficult), image_id)) - set(present)
        if not unsure:
            return present, None
        return present, [n for n in self.vocab.names if n not in present and n not in unsure]

    def _item_for(self, image_id: str) -> Item:
        ref: dict[str, Any] = {"file": f"JPEGImages/{image_id}.jpg", "image_id": image_id}
        reference: list[str] | None = None
        error, detail = None, ""
        try:
            reference, absent = self._labels(image_id)
            if absent is not None:
                ref[VERIFIED_ABSENT] = absent
        except ValueError as exc:
            error, detail = "source", str(exc)
        data, read_error, read_detail = read_image_file(self.root / "JPEGImages" / f"{image_id}.jpg")
        if read_error:
            error, detail = read_error, read_detail
        return Item(key=image_id, image=data, ext="jpg", ref=ref, reference=reference, error=error, detail=detail)
