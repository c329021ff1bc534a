"""What a process does after committing a shard into the working folder of an object-store output.

Its request cache's new answers go up first, as a file of their own (`caches/NAME.RUN.SEQ.sqlite`:
only the rows since the last commit, so each commit costs the shard's answers, not the whole cache
again), then the shard's files, then its stats object, the mark. A worker killed mid-shard loses
the answers of that shard alone; every file of every process is folded into `cache.sqlite` when
the build completes (`complete_output`).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from builder.ask.cache import RequestCache
from builder.ask.cache_files import CACHES_DIR, copy_new_rows
from builder.publish.store import StoreOutput


class ShardUpload:
    """Called by a shard's sink once the shard is committed locally: puts it in the store."""

    def __init__(self, store: StoreOutput, cache: RequestCache | None, name: str):
        self.store, self.cache, self.name = store, cache, name
        self.run = f"{int(time.time() * 1000):x}-{os.getpid()}"  # a restarted worker never reuses a name
        self.since, self.seq = 0, 0

    def __call__(self, shard: int, files: list[Path]) -> None:
        self._answers()
        self.store.push_shard(shard, files)

    def _answers(self) -> None:
        if self.cache is None:
            return
        with tempfile.TemporaryDirectory(prefix="tagllm-answers-") as tmp:
            delta = Path(tmp) / "delta.sqlite"
            last = copy_new_rows(self.cache, self.since, delta)
            if last == self.since:
                return
            self.seq += 1
            rel = f"{CACHES_DIR}/{self.name}.{self.run}.{self.seq:05d}.sqlite"
            self.store.push_file(delta, rel)
            self.since = last
