"""The shard walk keeps the window full across shard ends; runner choice and option errors; scale recipes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.errors import UserError
from builder.records import Item, Record
from builder.run.ray_runner import worker_servers
from builder.run.shards import parse_part, part_of
from builder.run.walk import ShardJob, ShardSink, walk_shards

REPO = Path(__file__).resolve().parents[2]


class ListSink(ShardSink):
    def __init__(self, shard: int, log: list):
        self.shard, self.log = shard, log

    def emit(self, item: Item, record: Record) -> None:
        self.log.append(("emit", self.shard, item.key))

    def commit(self, wall_seconds: float) -> dict:
        self.log.append(("commit", self.shard))
        return {"shard": self.shard}


def test_next_shard_starts_while_the_last_item_of_a_shard_is_still_out() -> None:
    events: list = []

    async def tag(item: Item) -> Record:
        events.append(("start", item.key))
        await asyncio.sleep(0.2 if item.key == "s0-2" else 0.001)  # shard 0 ends with a straggler
        events.append(("end", item.key))
        return Record(key=item.key, status="ok")

    jobs = [ShardJob(s, [Item(key=f"s{s}-{i}", image=b"x", ext="jpg", ref={}) for i in range(3)]) for s in range(3)]
    log: list = []
    committed = asyncio.run(walk_shards(jobs, tag, window=4, open_sink=lambda s: ListSink(s, log)))
    assert [c["shard"] for c in committed] == [0, 1, 2]
    # while the straggler of shard 0 was out, the window moved on into shard 1
    assert events.index(("start", "s1-0")) < events.index(("end", "s0-2"))
    # records still come out in source order, one shard at a time, each shard committed after its records
    assert log == [e for s in range(3) for e in [("emit", s, f"s{s}-{i}") for i in range(3)] + [("commit", s)]]


def test_window_is_a_bound() -> None:
    in_flight, peak = [0], [0]

    async def tag(item: Item) -> Record:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.001)
        in_flight[0] -= 1
        return Record(key=item.key, status="ok")

    jobs = [ShardJob(s, [Item(key=f"{s}-{i}", image=b"x", ext="jpg", ref={}) for i in range(7)]) for s in range(4)]
    asyncio.run(walk_shards(jobs, tag, window=5, open_sink=lambda s: ListSink(s, [])))
    assert peak[0] == 5


def test_parts_cover_every_shard_once() -> None:
    assert parse_part("2/5") == (2, 5)
    owners = [[i for i in range(5) if part_of(k, (i, 5))] for k in range(23)]
    assert all(len(o) == 1 for o in owners)
    for bad in ("5/5", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(UserError):
            parse_part(bad)


def test_one_server_per_worker() -> None:
    servers = ["http://a", "http://b", "http://c", "http://d"]
    assert [worker_servers(servers, 4, w) for w in range(4)] == [[s] for s in servers]
    assert [worker_servers(servers, 2, w) for w in range(2)] == [["http://a", "http://c"], ["http://b", "http://d"]]
    assert [worker_servers(servers[:1], 3, w) for w in range(3)] == [["http://a"]] * 3
    assert worker_servers([], 2, 0) == []


def test_runner_option_errors(write_recipe) -> None:
    recipe = str(write_recipe())
    for args, msg in ((["--runner", "ray", "--part", "0/2"], "--part is for array jobs"),
                      (["--address", "auto"], "need --runner ray"),
                      (["--runner", "ray", "--workers", "0"], "must be at least 1")):
        result = CliRunner().invoke(main, ["build", recipe, *args])
        assert result.exit_code != 0 and msg in result.output, (args, result.output)


@pytest.mark.parametrize("name", ["coco2014-dp.yaml", "coco2014-router.yaml"])
def test_scale_out_recipes_check(name: str) -> None:
    result = CliRunner().invoke(main, ["recipe", "check", str(REPO / "recipes" / name), "--no-source"])  # no COCO here
    assert result.exit_code == 0, result.output


def test_handed_shards_keep_the_complete_ones_and_tag_the_rest(build) -> None:
    """A Ray worker's path, without Ray: `tag_shards` with the shards a driver hands over."""
    from run.test_resilience import comparable

    from builder.ask.cache_files import open_cache
    from builder.engines.registry import open_engine
    from builder.method import TaggingContext
    from builder.publish import layout
    from builder.recipe.model import load_recipe
    from builder.run.build import complete_output
    from builder.run.shards import ShardChoice
    from builder.run.tagging import Tagging, tag_shards
    from builder.sources import open_source

    out = build().out  # 12 items, 5 per shard: 3 shards
    clean = comparable(out)
    layout.shard_stats_path(out, 1).unlink()  # shard 1 reopened, as a worker killed before its commit leaves it
    loaded = load_recipe(out / layout.RECIPE)
    source = open_source(loaded.recipe.source, loaded.vocab, loaded.base_dir)

    async def worker() -> tuple:
        engine = open_engine(loaded.recipe.engine, loaded.vocab)
        await engine.start()
        cache = open_cache(out, "worker-000")
        try:
            tagging = Tagging.open(loaded, out, engine, cache, TaggingContext(loaded), engine.describe())
            first = await tag_shards(tagging, source, ShardChoice(shards=(0, 1)))
            again = await tag_shards(tagging, source, ShardChoice(shards=(1, 2)))  # a retried call
            return first, again, tagging.tagged
        finally:
            cache.close()
            await engine.close()

    first, again, tagged = asyncio.run(worker())
    assert (first.skipped, first.todo, [s["shard"] for s in first.committed]) == (1, [1], [1])
    assert first.committed[0]["images"] == 5 and first.committed[0]["sent"] == 0  # answers replayed from the cache
    assert (again.skipped, again.todo, again.committed) == (2, [], [])
    assert tagged == {1}
    complete_output(out, loaded, 3, layout.read_json(out / layout.MANIFEST))
    assert comparable(out) == clean
    assert not (out / "caches").exists()  # the worker's cache folded into cache.sqlite
