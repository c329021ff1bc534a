"""The source interface. A reader streams items; it never holds the whole source in memory.

Every item a source names becomes an `Item`, even when its image cannot be read: then `image` is
None and `error` says why (missing, empty, source), so the run can record it instead of dropping it.
Keys are stable across runs (derived from paths, ids or indexes) and unique within a source.
Human labels are mapped to vocabulary names here (via `label_map`), so the rest of the builder
only ever sees vocabulary labels.

Partitioning (shard i of n). A build cuts the stable item order into shards of `size` items:
shard i holds positions [i*size, (i+1)*size), and n = ceil(count / size). `shard(i, size)` yields
exactly the items that a full iteration yields at those positions (same keys, same bytes), so any
process can tag any shard on its own and shards are stable across runs. A reader that can reach
positions directly (file lists, row indexes, tar lists) overrides `_slice` and `size`, reading
only cheap listings (paths, ids, tar headers) of other shards and never their image bytes; the
default walks the stream from the start (correct, but it reads every earlier item).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder import storage
from builder.errors import UserError
from builder.recipe.kinds import SOURCES
from builder.records import Item

if TYPE_CHECKING:
    from builder.recipe.model import SourceSpec
    from builder.recipe.vocab import Vocabulary

class Source(ABC):
    """Base class: owns the limit and the label mapping; a reader fills in `_items`."""

    kind = "source"

    def __init__(self, spec: SourceSpec, vocab: Vocabulary, base_dir: Path):
        self.spec = spec
        self.vocab = vocab
        self._names = dict.fromkeys(vocab.names)  # in vocabulary order, O(1) to test; read for every row
        self.base_dir = base_dir

    def resolve(self, value: str) -> Path:
        """A local path of the recipe (relative to its folder); an object-store URL is refused in one line."""
        if storage.is_url(value):
            raise UserError(f"source: {value}: kind {self.spec.kind} reads local files only (object-store URLs "
                            "work with kinds folder, webdataset and img2dataset)")
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def annotations_path(self, needs: str) -> Path:
        """`spec.annotations` resolved; when the recipe gives none, an error saying what this kind `needs`."""
        if not self.spec.annotations:
            raise UserError(f"source.annotations: {needs}")
        return self.resolve(self.spec.annotations)

    def image_folder(self) -> Path:
        """`spec.path` resolved: the folder the images are read from."""
        root = self.resolve(self.spec.path)
        if not root.is_dir():
            raise UserError(f"source.path: not a folder: {root}")
        return root

    def __iter__(self) -> Iterator[Item]:
        for n, item in enumerate(self._items()):
            if self.spec.limit is not None and n >= self.spec.limit:
                return
            yield item

    def size(self) -> int | None:
        """How many items the source holds before `limit`, when known cheaply (for progress); else None."""
        return None

    def total(self) -> int | None:
        """Items this run will read: size capped by limit (None when neither is known)."""
        size = self.size()
        limit = self.spec.limit
        if size is None:
            return None
        return min(size, limit) if limit is not None else size

    @abstractmethod
    def _items(self) -> Iterator[Item]:
        """Yield every item of the source in a stable order."""

    def shard_count(self, size: int) -> int | None:
        """n, the number of shards of `size` items; None when the count is unknown."""
        n = self.total()
        return None if n is None else -(-n // size)

    def shard(self, index: int, size: int) -> Iterator[Item]:
        """Shard `index`: the items at positions [index*size, (index+1)*size) of the stable order."""
        if index < 0 or size < 1:
            raise ValueError(f"shard {index} of size {size}: index must be >= 0 and size >= 1")
        start, stop = index * size, (index + 1) * size
        if self.spec.limit is not None:
            stop = min(stop, self.spec.limit)
        if start >= stop:
            return iter(())
        return self._slice(start, stop)

    def _slice(self, start: int, stop: int) -> Iterator[Item]:
        """Items at positions [start, stop); override to reach them without reading earlier items."""
        return islice(self._items(), start, stop)

    def map_labels(self, names: list[Any], where: str) -> list[str]:
        """Source label names/ids -> vocabulary labels (dedupe, vocabulary order).

        Raises ValueError naming the label when it maps to nothing; the reader turns that into
        an item with error 'source' (a bad row never kills the run).
        """
        vocab_names = self._names
        out: set[str] = set()
        for raw in names:
            name = str(raw)
            if name in self.spec.label_map:
                mapped = self.spec.label_map[name]
                if mapped is None:
                    continue
                name = mapped
            resolved = name if name in vocab_names else self.vocab.resolve(name)
            if resolved is None:
                raise ValueError(f"{where}: label {name!r} is not in the vocabulary "
                                 "(add it to the vocabulary, as a synonym, or to source.label_map)")
            out.add(resolved)
        return [n for n in vocab_names if n in out]


def require_file(path: Path, setting: str = "source.annotations") -> Path:
    """`path`, which the recipe `setting` points at and which must be a file."""
    if not path.is_file():
        raise UserError(f"{setting}: file not found: {path}")
    return path


def open_source(spec: SourceSpec, vocab: Vocabulary, base_dir: Path) -> Source:
    """The reader of `spec.kind` (its class is named in `recipe.kinds.SOURCES`, imported only now)."""
    return SOURCES.load(spec.kind)(spec, vocab, base_dir)
