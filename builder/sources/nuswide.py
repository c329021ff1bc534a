"""NUS-WIDE reader: an image list and one 0/1 label file per concept, aligned line by line.

Layout (as distributed by NUS): `annotations` is the folder holding `Concepts81.txt`,
`ImageList/TrainImagelist.txt` / `TestImagelist.txt` (Windows-style relative paths such as
`actor\\0001_2124494179.jpg`) and `Groundtruth/TrainTestLabels/Labels_<concept>_<Train|Test>.txt` (line k
is 1 when concept holds for image k of the list). `path` is the image folder those relative paths
start from (`Flickr/`). Many Flickr originals are gone: a listed image that is not on disk becomes a
`missing` record. A label line that is neither 0 nor 1 (the official Labels_lake_Train.txt has one)
makes that image a `source` failure naming the file and line; the rest of the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import UserError
from builder.records import Item
from builder.sources.base import require_file
from builder.sources.folder import read_image_file, split_ext, unique_keys
from builder.sources.listed import ListedSource

if TYPE_CHECKING:
    from builder.recipe.model import SourceSpec
    from builder.recipe.vocab import Vocabulary


@dataclass
class _Entry:
    rel: str
    key: str
    concepts: list[str]
    problem: str = ""


class NusWideSource(ListedSource):
    """`spec.annotations` (NUS-WIDE metadata folder) over the image folder `spec.path`."""

    kind = "nuswide"

    def __init__(self, spec: SourceSpec, vocab: Vocabulary, base_dir: Path):
        super().__init__(spec, vocab, base_dir)
        self.meta = self.annotations_path("a NUS-WIDE source needs the folder with ImageList/ and Groundtruth/")
        self.root = self.resolve(spec.path)
        self.split = spec.split.capitalize()
        if self.split not in ("Train", "Test"):
            raise UserError(f"source.split: {spec.split!r}: NUS-WIDE has Train and Test")
        for need in ("Concepts81.txt", f"ImageList/{self.split}Imagelist.txt"):
            require_file(self.meta / need)

    def _lines(self, rel: str) -> list[str]:
        path = require_file(self.meta / rel)
        return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]

    def _read_listing(self) -> list[_Entry]:
        concepts = [c for c in self._lines("Concepts81.txt") if c]
        rels = [line.replace("\\", "/") for line in self._lines(f"ImageList/{self.split}Imagelist.txt") if line]
        keys = unique_keys(rels)
        entries = [_Entry(r, keys[r], []) for r in rels]
        for concept in concepts:
            name = f"Groundtruth/TrainTestLabels/Labels_{concept}_{self.split}.txt"
            values = [v for v in self._lines(name) if v]
            if len(values) != len(entries):
                raise UserError(f"{self.meta / name}: {len(values)} lines for {len(entries)} listed images")
            for line_no, (entry, value) in enumerate(zip(entries, values), start=1):
                if value == "1":
                    entry.concepts.append(concept)
                elif value != "0" and not entry.problem:
                    entry.problem = f"{name} line {line_no}: label value {value!r} is not 0 or 1"
        return entries

    def _item_for(self, entry: _Entry) -> Item:
        ext = split_ext(entry.rel)[1]
        ref = {"file": entry.rel}
        reference: list[str] | None = None
        error, detail = None, ""
        if entry.problem:
            error, detail = "source", entry.problem
        else:
            try:
                reference = self.map_labels(entry.concepts, entry.rel)
            except ValueError as exc:
                error, detail = "source", str(exc)
        data, read_error, read_detail = read_image_file(self.root / entry.rel)
        if read_error:
            error, detail = read_error, read_detail
        return Item(key=entry.key, image=data, ext=ext, ref=ref, reference=reference, error=error, detail=detail)
