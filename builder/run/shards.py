"""Which shards a process tags (its `ShardChoice`, planned by `plan_shards`), and the sink that writes
and commits one shard.

Every runner (one process, `--part I/N`, a Ray worker) cuts the source the same way: shard k
holds items [k*S, (k+1)*S) of the source's stable order. A part takes the shards k with
k % N == I, so parts never overlap and together cover every shard; a Ray worker takes whatever
shard the driver hands it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.publish import layout
from builder.publish.stats import ShardStats
from builder.records import EncodedRecord, Item, Record
from builder.run.walk import ShardJob, ShardSink, direct_jobs, stream_jobs


def parse_part(text: str) -> tuple[int, int]:
    """'1/4' -> (1, 4); I counts from 0 (Slurm: --part $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--part {text!r}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--part {text}: need N >= 1 and 0 <= I < N")
    return index, count


def part_of(shard: int, part: tuple[int, int] | None) -> bool:
    return part is None or shard % part[1] == part[0]


@dataclass(frozen=True)
class ShardChoice:
    """Which shards a process tags: every shard (the default), one part's, or the ones it is handed."""

    part: tuple[int, int] | None = None  # --part I/N: the shards k with k % N == I
    shards: tuple[int, ...] | None = None  # handed over by a driver (a Ray worker): each read directly

    def has(self, shard: int) -> bool:
        if self.shards is not None:
            return shard in self.shards
        return part_of(shard, self.part)


@dataclass
class ShardPlan:
    """The jobs of one process, and what it learned while walking (shard total, kept shards)."""

    jobs: Iterator[ShardJob]
    total: int | None  # shards in the source; None for handed shards, or a stream not yet read to its end
    skipped: int = 0
    todo: list[int] | None = None  # the shards to tag, when known before walking (read directly)
    committed: list[dict[str, Any]] = field(default_factory=list)  # stats of the shards tagged, in order


def plan_shards(out: Path, source: Any, per_shard: int, choice: ShardChoice, on_skip: Callable[[int], None],
                keep: Callable[[int, list[str]], bool] | None = None) -> ShardPlan:
    """One pass over the stream for a whole build; direct shard reads for a part (count known) or handed shards.

    A single process reads every item anyway, so it streams once (reading a shard directly can
    cost a re-read of a tar's earlier samples) and checks each complete shard's keys with `keep`.
    A part reads only its own shards when the source can reach them, and handed shards are always
    read so; complete ones are kept, counted by their stats. Otherwise a part streams past the
    other parts' items without tagging them.
    """
    done = set(layout.completed_shards(out))
    total = source.shard_count(per_shard) if choice.part is not None else None
    plan = ShardPlan(iter(()), total)

    def decide(shard: int) -> str:
        if not choice.has(shard):
            return "other"
        return "done" if shard in done else "tag"

    def kept(n: int) -> None:
        plan.skipped += 1
        on_skip(n)

    def skipped(shard: int, n: int) -> None:
        if choice.has(shard):
            kept(n)

    def ended(n: int) -> None:
        plan.total = n

    if choice.shards is None and total is None:
        plan.jobs = stream_jobs(iter(source), per_shard, decide, skipped, ended, keep,
                                lambda shard: source.shard(shard, per_shard))
        return plan
    wanted = list(choice.shards) if choice.shards is not None else [k for k in range(total) if choice.has(k)]
    for k in wanted:
        if k in done:
            kept(int(layout.read_json(layout.shard_stats_path(out, k))["images"]))
    plan.todo = [k for k in wanted if k not in done]
    plan.jobs = direct_jobs(source, per_shard, plan.todo)
    return plan


class WriterSink(ShardSink):
    """Writes one shard through the writers and commits it; the stats json is written last."""

    def __init__(self, out: Path, shard: int, writers: list, counts: Any, simulated: bool,
                 on_record: Callable[[Record], None] | None = None, tally: dict[str, int] | None = None,
                 fix: Callable[[Record, bytes | None], Record] | None = None,
                 durable: Callable[[], None] | None = None, by: str | None = None,
                 publish: Callable[[int, list[Path]], None] | None = None):
        self.out, self.shard, self.writers, self.fix, self.by = out, shard, writers, fix, by
        self.publish = publish  # puts the committed shard in an object store (run.remote.ShardUpload)
        self.durable = durable  # makes the request cache's answers durable (before the shard is renamed)
        self.counts, self.simulated, self.on_record = counts, simulated, on_record
        # `tally` holds the asker's counts at the previous commit of the same walk (shared by its sinks)
        self.tally = tally if tally is not None else {"sent": 0, "retries": 0}
        self.stats = ShardStats(shard)
        try:
            for w in writers:
                w.begin_shard(shard)
        except BaseException:  # a full disk can stop the second writer: drop what the first began
            self.abort()
            raise

    def emit(self, item: Item, record: Record) -> None:
        if self.fix is not None:  # reviewed labels replace the machine's (kept beside them)
            record = self.fix(record, item.image)
        encoded = EncodedRecord(record)  # one encoding of its JSON for every writer
        for w in self.writers:
            w.write(encoded, item.image)
        self.stats.add(record)
        if self.on_record is not None:
            self.on_record(record)

    def abort(self) -> None:
        for w in self.writers:
            w.abort()

    def commit(self, wall_seconds: float) -> dict[str, Any]:
        """Rename every file of the shard into place, then write its stats (the completion mark)."""
        if self.durable is not None:
            self.durable()  # every answer is committed before any file of its shard is
        files = [w.end_shard() for w in self.writers]
        # Requests are counted between commits: with shards overlapping in the window the split
        # between neighbours is approximate, the total over a run is exact.
        sent, retries = self.counts["sent"], self.counts["retries"]
        data = self.stats.finish(wall_seconds, sent - self.tally["sent"], retries - self.tally["retries"],
                                 self.simulated, by=self.by)
        self.tally.update(sent=sent, retries=retries)
        layout.write_json(layout.shard_stats_path(self.out, self.shard), data)
        if self.publish is not None:
            self.publish(self.shard, files)
        return data


def remove_leftovers(out: Path) -> int:
    """Delete temporary files of processes that died mid-shard (call when no writer is running)."""
    removed = 0
    for folder in (out, out / layout.INDEX_DIR, out / layout.WDS_DIR, out / layout.HF_DIR):
        if folder.is_dir():
            for path in folder.glob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
