"""Tag a process's shards: keep the complete ones, tag the rest, write each shard's stats, commit.

Every runner goes through `tag_shards`: one process hands it every shard, `--part I/N` its part's,
a Ray worker the shard the driver gave it; they differ only in that choice. What a process tags
with (asker, strategy, task window, reviewed-label corrector) is set up once by `Tagging.open` and
shared by every shard the process tags, so the requests sent are counted once per process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.ask.asker import Asker
from builder.ask.cache import RequestCache
from builder.engines.base import Engine
from builder.method import TaggingContext, make_strategy
from builder.publish import corrections
from builder.publish.writers import make_writers
from builder.recipe.model import LoadedRecipe
from builder.records import Record
from builder.run import preflight
from builder.run.progress import Reporter
from builder.run.shards import ShardChoice, ShardPlan, WriterSink, plan_shards
from builder.run.walk import walk_shards


def gpu_count(loaded: LoadedRecipe, engine_info: dict[str, Any]) -> int:
    """`cost.gpus` when the recipe sets it, else what the engine says (sglang tp x dp, http servers), else 1."""
    return int(loaded.recipe.cost.gpus or engine_info.get("gpus") or 1)


@dataclass
class Tagging:
    """What one process tags with, made once and shared by all its shards (also when two run at once)."""

    out: Path
    loaded: LoadedRecipe
    engine: Engine
    asker: Asker
    strategy: Any
    window: int  # items in flight at most, across shard ends
    fix: Callable[[Record, bytes | None], Record]  # reviewed labels, by image digest
    # The asker's counts at the last commit of this process: each shard's stats get the requests since.
    tally: dict[str, int] = field(default_factory=lambda: {"sent": 0, "retries": 0})
    tagged: set[int] = field(default_factory=set)  # shards tagged by this process (not kept as they were)
    by: str | None = None  # who tags, named in each shard's stats: "worker 3" (Ray), "part 0/4"
    upload: Callable[[int, list[Path]], None] | None = None  # an object-store output: puts each committed shard

    @classmethod
    def open(cls, loaded: LoadedRecipe, out: Path, engine: Engine, cache: RequestCache | None,
             ctx: TaggingContext, engine_info: dict[str, Any], window: int | None = None) -> Tagging:
        """Set up tagging through a started `engine`; `engine_info` is its description (read once)."""
        asker = Asker(engine, cache, loaded.vocab.digest(), gpus=gpu_count(loaded, engine_info))
        strategy = make_strategy(loaded.recipe.tagging.strategy, ctx, asker, engine.simulated)
        return cls(Path(out), loaded, engine, asker, strategy, window or max(4, min(engine.concurrency, 256)),
                   corrections.corrector(out, loaded.vocab.names))


async def tag_shards(tagging: Tagging, source: Any, choice: ShardChoice,
                     reporter: Reporter | None = None) -> ShardPlan:
    """Tag the chosen shards of `source` through one task window; complete shards are kept.

    A complete shard read in the stream is kept when the source still gives it the same keys, else
    tagged again (the source grew or changed); one read directly is kept as it is. Each shard's files
    are committed with its stats json last, after the request cache's answers are durable. Returns
    the plan: shard total (when learnt), shards kept, and the stats of each shard committed.
    """
    out, output = tagging.out, tagging.loaded.recipe.output
    cache = tagging.asker.cache

    def keep(shard: int, keys: list[str]) -> bool:
        return keys == preflight.shard_keys(out, shard)

    def on_record(record: Record) -> None:
        if reporter is not None:
            reporter.record(record.status, record.error, int(record.usage.get("cached", 0)))

    plan = plan_shards(out, source, output.samples_per_shard, choice,
                       reporter.skip if reporter is not None else (lambda n: None), keep)
    writers = make_writers(out, tagging.loaded.vocab, output.formats, output.include_failed)

    def sink(shard: int) -> WriterSink:
        tagging.tagged.add(shard)
        return WriterSink(out, shard, writers, tagging.asker.counts, tagging.engine.simulated, on_record,
                          tagging.tally, tagging.fix, durable=cache.commit if cache is not None else None,
                          by=tagging.by, publish=tagging.upload)

    plan.committed = await walk_shards(plan.jobs, tagging.strategy.tag, tagging.window, sink)
    return plan
