"""What a process does after committing a shard into the working folder of an object-store output.

The shard goes up in a thread of its own while the next shard is tagged (the engine never waits on
the store): first the request cache's new answers, as a file of their own
(`caches/NAME.RUN.SEQ.sqlite`: only the rows since the last commit, so each commit costs the
shard's answers, not the whole cache again), then the shard's files, then its stats object, the
mark. Shards go up one at a time, in commit order. A process killed before a shard's mark is up
leaves that shard missing in the store (the next run writes it again) and loses the answers not
yet uploaded; every file of every process is folded into `cache.sqlite` when the build completes
(`complete_output`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from builder.ask.cache import RequestCache
from builder.ask.cache_files import CACHES_DIR, copy_new_rows
from builder.errors import RunError
from builder.publish import layout
from builder.publish.store import StoreOutput


def uploader(store: StoreOutput | None, cache: RequestCache | None, name: str, source: Any,
             per_shard: int) -> ShardUpload | None:
    """The upload of a process writing into `store` (None for a local output); the source's shard total,
    when it knows it (its listing is read for progress anyway), names the HF files from the start."""
    if store is None:
        return None
    return ShardUpload(store, cache, name, source.shard_count(per_shard))


def pull_output(store: StoreOutput, ignore: Callable[[str], bool], overwrite: bool = False) -> None:
    """Bring the store's small files into the working folder; refuse a prefix that holds other objects
    (names `ignore` accepts are what a build, or a part starting beside this one, writes)."""
    store.pull(fresh=overwrite)
    if not (store.work / layout.MANIFEST).is_file() and any(not ignore(n) for n in store.top_names()):
        raise RunError(f"{store.url}: holds objects and is not a tagllm output; choose another --out")


def gather(store: StoreOutput, shards: int) -> None:
    """Before the totals: drop the store's shards past the source's end, bring down what other processes
    committed (index and marks) and their answer files."""
    store.drop_shards_from(shards)
    store.pull_dir(layout.INDEX_DIR, missing_only=True)
    store.pull_dir(CACHES_DIR, missing_only=True)  # this process's own answer files are there already


def put_folded(store: StoreOutput, shards: int) -> None:
    """After the caches are folded: HF files named with the shard total, the one cache up, the part files gone."""
    store.name_data_files(shards)
    store.push([layout.CACHE])
    store.delete_dir(CACHES_DIR)


class ShardUpload:
    """Called by a shard's sink once the shard is committed locally (its answers durable): puts it in the store."""

    def __init__(self, store: StoreOutput, cache: RequestCache | None, name: str, total: int | None = None):
        self.store, self.cache, self.name = store, cache, name
        self.total = total  # shards in the source, when known before tagging: HF files go up under final names
        self.run = f"{int(time.time() * 1000):x}-{os.getpid()}"  # a restarted worker never reuses a name
        self.since, self.seq = 0, 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tagllm-upload")
        self._futures: dict[int, Future] = {}

    def __call__(self, shard: int, files: list[Path]) -> None:
        failed = [f for f in self._futures.values() if f.done() and f.exception() is not None]
        if failed:
            failed[0].result()  # an earlier upload failed: stop the build now, not at its end
        self._futures[shard] = self._pool.submit(self._put, shard, files)

    def wait(self) -> None:
        """Block until every shard handed over is in the store (raises the first upload error)."""
        futures, self._futures = list(self._futures.values()), {}
        for future in futures:
            future.result()

    async def committed(self, shard: int) -> None:
        """Wait, without blocking the loop, until this shard's mark is in the store."""
        future = self._futures.pop(shard, None)
        if future is not None:
            await asyncio.wrap_future(future)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _put(self, shard: int, files: list[Path]) -> None:
        self._answers()
        self.store.push_shard(shard, files, self.total)

    def _answers(self) -> None:
        if self.cache is None:
            return
        rel = f"{CACHES_DIR}/{self.name}.{self.run}.{self.seq + 1:05d}.sqlite"
        last = copy_new_rows(self.cache, self.since, self.store.work / rel)  # kept: the end need not fetch it
        if last == self.since:
            return
        self.store.push([rel])
        self.since, self.seq = last, self.seq + 1
