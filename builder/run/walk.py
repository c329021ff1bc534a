"""Tag a run of shards through one window of tasks that never drains at a shard end.

Items of shard k+1 are already being tagged while the last, slow items of shard k finish, so the
engine's queue stays full across shard boundaries. Records still come out in source order, one
shard at a time, so each shard is written and committed (temporary names, renamed, stats json
last) exactly as before: the commit protocol and resume do not change.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from builder.records import Item, Record

Tag = Callable[[Item], Awaitable[Record]]
_END = object()  # marks the end of a shard in the task window


@dataclass
class ShardJob:
    """One shard to tag: its index and its items (an iterator read as the window needs them)."""

    index: int
    items: Iterable[Item]


class ShardSink:
    """Where one shard's records go: writers, shard stats, progress; `commit` makes the shard final."""

    def emit(self, item: Item, record: Record) -> None:
        raise NotImplementedError

    def commit(self, wall_seconds: float) -> dict[str, Any]:
        raise NotImplementedError

    def abort(self) -> None:
        """An error stopped the walk before `commit` finished: drop what is half written."""


async def walk_shards(jobs: Iterable[ShardJob], tag: Tag, window: int,
                      open_sink: Callable[[int], ShardSink]) -> list[dict[str, Any]]:
    """Tag every item of every job with at most `window` items in flight; commit shards in order.

    A shard's sink is opened when its first record is emitted and committed once its last record
    is written. Returns what each commit returned (the shard stats), in shard order.
    """
    pending: deque[tuple[Any, ...]] = deque()
    committed: list[dict[str, Any]] = []
    state: dict[str, Any] = {"sink": None, "since": time.perf_counter(), "tasks": 0}

    async def settle_one() -> None:
        entry = pending.popleft()
        if entry[0] is _END:
            if state["sink"] is not None:
                now = time.perf_counter()
                committed.append(state["sink"].commit(now - state["since"]))
                state.update(sink=None, since=now)
            return
        shard, item, task = entry
        record = await task
        state["tasks"] -= 1
        if state["sink"] is None:
            state["sink"] = open_sink(shard)
        state["sink"].emit(item, record)

    try:
        for job in jobs:
            for item in job.items:
                pending.append((job.index, item, asyncio.create_task(tag(item))))
                state["tasks"] += 1
                while state["tasks"] >= window:
                    await settle_one()
            pending.append((_END,))
        while pending:
            await settle_one()
    except BaseException:
        if state["sink"] is not None:
            state["sink"].abort()
        for entry in pending:  # the window's other tasks: stop them, and take the errors of finished ones
            if entry[0] is not _END:
                task = entry[2]
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()
        raise
    return committed


def stream_jobs(items: Iterator[Item], per_shard: int, decide: Callable[[int], str],
                skipped: Callable[[int, int], None], ended: Callable[[int], None],
                keep: Callable[[int, list[str]], bool] | None = None,
                redo: Callable[[int], Iterable[Item]] | None = None) -> Iterator[ShardJob]:
    """Cut one pass over the source into shards; `decide(shard)` says what to do with each.

    "tag": tag it. "done" (complete from an earlier run): read its keys; kept when `keep(shard,
    keys)` agrees (then `skipped(shard, n)`), else tagged again from `redo(shard)`. "other" (another
    part's): read past. `ended(total)` gets the shard count when the source runs out.
    """
    shard = 0
    while True:
        chunk = islice(items, per_shard)
        first = next(chunk, None)
        if first is None:
            ended(shard)
            return
        kind = decide(shard)
        if kind == "tag":
            yield ShardJob(shard, _chain(first, chunk))
        else:
            keys = [first.key] + [item.key for item in chunk]
            if kind == "done" and keep is not None and redo is not None and not keep(shard, keys):
                yield ShardJob(shard, redo(shard))  # the source changed here since the earlier run
            else:
                skipped(shard, len(keys))
        shard += 1


def direct_jobs(source: Any, per_shard: int, shards: Iterable[int]) -> Iterator[ShardJob]:
    """Each wanted shard read on its own through `Source.shard` (no other shard's items are read)."""
    for shard in shards:
        yield ShardJob(shard, source.shard(shard, per_shard))


def _chain(first: Item, rest: Iterator[Item]) -> Iterator[Item]:
    yield first
    yield from rest
