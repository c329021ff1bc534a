"""Writers: each format turns the records of one shard into files, atomically."""

from __future__ import annotations

from pathlib import Path

from builder.publish.writers.base import Writer
from builder.recipe.kinds import FORMATS
from builder.recipe.vocab import Vocabulary


def make_writers(out: Path, vocab: Vocabulary, formats: list[str], include_failed: bool = False) -> list[Writer]:
    """One writer per requested format (classes named in `recipe.kinds.FORMATS`), then the index writer,
    which holds every record."""
    from builder.publish.writers.index import IndexWriter

    writers: list[Writer] = [FORMATS.load(f)(out, vocab, include_failed) for f in formats]
    writers.append(IndexWriter(out, vocab, include_failed=True))  # the index always holds every record
    return writers


__all__ = ["Writer", "make_writers"]
