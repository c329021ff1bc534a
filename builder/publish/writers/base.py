"""The shard protocol all writers follow: write under a temporary name, rename when complete.

A shard that was being written when the process died leaves only a `.tmp` file (named with the
writing process's id), which a complete build removes; the next run writes the shard again; a
renamed file is always complete.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

from builder.recipe.vocab import Vocabulary
from builder.records import EncodedRecord


class Writer(ABC):
    format = "writer"

    def __init__(self, out: Path, vocab: Vocabulary, include_failed: bool = False):
        self.out = out
        self.vocab = vocab
        self.include_failed = include_failed
        self.shard: int | None = None

    def begin_shard(self, shard: int) -> None:
        self.shard = shard
        self.final_path(shard).parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path(shard).unlink(missing_ok=True)
        self._open(self.tmp_path(shard))

    def write(self, encoded: EncodedRecord, image: bytes | None) -> None:
        """`encoded` is made once by the caller and handed to every writer of the shard."""
        if encoded.record.status != "ok" and not self.include_failed:
            return
        self._write(encoded, image)

    def end_shard(self) -> Path:
        assert self.shard is not None
        self._close()
        final = self.final_path(self.shard)
        os.replace(self.tmp_path(self.shard), final)
        self.shard = None
        return final

    def abort(self) -> None:
        """Drop the shard being written (an error stopped the build): close quietly, delete its temporary file."""
        if self.shard is None:
            return
        try:
            self._discard()
        except Exception:  # noqa: BLE001 - the build is failing already; its error is the one to show
            pass
        self.tmp_path(self.shard).unlink(missing_ok=True)
        self.shard = None

    def _discard(self) -> None:
        """Close what `_open` opened without finishing the file (default: close it)."""
        self._close()

    def tmp_path(self, shard: int) -> Path:
        """Per process: two processes writing one shard (a worker thought dead) never share a file."""
        final = self.final_path(shard)
        return final.with_name(f".{final.name}.{os.getpid()}.tmp")

    def finalize(self, shards: list[int]) -> None:
        """Called once every shard is complete (e.g. to name files with the shard total)."""

    @abstractmethod
    def final_path(self, shard: int) -> Path: ...

    @abstractmethod
    def _open(self, path: Path) -> None: ...

    @abstractmethod
    def _write(self, encoded: EncodedRecord, image: bytes | None) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...
