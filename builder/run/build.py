"""Drive a build: source -> strategy (through cache and engine) -> writers, shard by shard.

The shard is the unit of commit: its files are written under temporary names, renamed when
complete, and its stats json is written last. A rerun on the same output folder skips complete
shards and replays cached answers for the shard that was cut short, so only requests that never
finished are sent again. Every source item yields exactly one record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder import __version__
from builder.publish.cost import cost_report
from builder.engines.base import Engine
from builder.engines.registry import engine_from_spec
from builder.errors import RunError, UserError
from builder.method import TaggingContext, make_strategy
from builder.publish import corrections, layout
from builder.publish.stats import merge
from builder.publish.writers import make_writers
from builder.recipe.model import LoadedRecipe
from builder.records import Record
from builder.run import preflight
from builder.ask.asker import Asker
from builder.ask.cache_files import merge_caches, open_cache
from builder.run.progress import Reporter
from builder.run.shards import WriterSink, plan_shards, remove_leftovers
from builder.run.walk import walk_shards
from builder.sources import open_source


@dataclass
class BuildResult:
    out: Path
    stats: dict[str, Any]
    shards: int
    skipped_shards: int = 0
    sent: int = 0
    simulated: bool = False
    engine: dict[str, Any] = field(default_factory=dict)
    rerun: dict[str, int] | None = None  # new / kept / redone, when the folder held an earlier build
    notes: list[str | None] = field(default_factory=list)  # what else happened (shown in the summary)


def choose_engine_kind(kind: str) -> str:
    """'auto' means sglang when it is installed and a GPU is visible; otherwise say what to pick."""
    if kind != "auto":
        return kind
    if importlib.util.find_spec("sglang") is not None and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "sglang"
    raise UserError(
        "engine 'auto' needs sglang and a GPU (pip install -e '.[sglang]' in a checkout); otherwise choose "
        "--engine http --server URL, --engine transformers --model DIR, or --engine simulated"
    )


def _check_out(out: Path, digest: str, overwrite: bool, adopt: bool = False,
               loaded: LoadedRecipe | None = None) -> dict[str, Any] | None:
    """Check the output folder (read only); return the manifest of an earlier run to resume, or None."""
    manifest_path = out / layout.MANIFEST
    if manifest_path.is_file():
        manifest = layout.read_json(manifest_path)
        if overwrite:
            return None
        if manifest.get("recipe_digest") != digest and not adopt:
            if loaded is not None:
                raise preflight.recipe_change(out, loaded, loaded.recipe.output.samples_per_shard)
            raise RunError(f"{out}: was built from a different recipe; pass --overwrite to start over "
                           "or choose another --out")
        return manifest
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: exists, is not empty and is not a tagllm output; choose another --out")
    return None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # parts may write the manifest at once
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str), encoding="utf-8")
    tmp.replace(path)


def save_recipe(loaded: LoadedRecipe, out: Path) -> None:
    """The resolved recipe beside the data, so `tagllm build OUT/recipe.yaml` re-runs it from anywhere."""
    data = loaded.portable(out)
    if data["tagging"].get("concept_sheet"):
        loaded.concepts.save(out / layout.CONCEPTS)
        data["tagging"]["concept_sheet"] = layout.CONCEPTS
    (out / layout.RECIPE).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


class Builder:
    """One build of one recipe into one output folder."""

    def __init__(self, loaded: LoadedRecipe, out: Path, engine: Engine | None = None,
                 overwrite: bool = False, progress: bool = True, window: int | None = None,
                 adopt: bool = False):
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.out = Path(out)
        self.overwrite = overwrite
        self.progress = progress
        self._engine = engine
        self.window = window
        self._checked: tuple | None = None
        self.adopt = adopt  # continue an output made by another recipe digest (relabel, retry-failed)
        self._rewritten: set[int] = set()  # shards tagged this run (not kept as they were)
        self._tagged = 0  # records written this run
        self.part: tuple[int, int] | None = None  # (I, N): tag only shards k with k % N == I
        self.cache_name: str | None = None  # a worker's own cache file under OUT/caches/

    def _engine_for_run(self) -> Engine:
        if self._engine is not None:
            return self._engine
        kind = choose_engine_kind(self.recipe.engine.kind)
        return engine_from_spec(self.recipe.engine, self.loaded.vocab, kind)

    def digest(self) -> str:
        return self.loaded.digest() + f"-{self.recipe.output.samples_per_shard}"

    def check(self) -> Engine:
        """Validate templates, engine choice, source and output folder; writes nothing."""
        if self._checked is None:
            digest = self.digest()
            ctx = TaggingContext(self.loaded)
            engine = self._engine_for_run()
            source = open_source(self.recipe.source, self.loaded.vocab, self.loaded.base_dir)
            earlier = _check_out(self.out, digest, self.overwrite, self.adopt, self.loaded)
            first = preflight.peek(source)
            if engine.simulated and not self.adopt and not self.recipe.engine.simulation.allow_unlabeled:
                preflight.refuse_simulation_without_labels(first, self.recipe.source.path)
            self._checked = (ctx, engine, source, digest, earlier)
        return self._checked[1]

    def run(self) -> BuildResult:
        """Check everything, start the engine, then write; input errors leave nothing behind."""
        self.check()
        fresh = self.overwrite or not (self.out / layout.MANIFEST).is_file()
        before = {} if fresh else preflight.earlier_status(self.out)
        try:
            result = asyncio.run(self._main(*self._checked))
        except UserError:
            if fresh and self._tagged == 0 and self.out.exists():
                shutil.rmtree(self.out)  # an input error before any item was tagged: leave no folder
            raise
        if before:
            result.rerun = preflight.rerun_counts(self.out, before, self._rewritten)
        return result

    async def _main(self, ctx: TaggingContext, engine: Engine, source: Any, digest: str,
                    earlier: dict[str, Any] | None) -> BuildResult:
        await engine.start()
        try:
            manifest = self._prepare_out(engine, digest, earlier)
            cache = open_cache(self.out, self.cache_name)
            asker = Asker(engine, cache, self.loaded.vocab.digest(), gpus=gpu_count(self.loaded, engine.describe()))
            reporter = Reporter(total=source.total(), show=self.progress, requests=asker.counts)
            try:
                strategy = make_strategy(self.recipe.tagging.strategy, ctx, asker, engine.simulated)
                try:
                    shards, skipped = await self._shards(source, strategy, asker, reporter, engine)
                except BaseException:  # Ctrl-C, an error: stop tagging before the cache closes under it
                    await _cancel_other_tasks()
                    raise
            finally:
                reporter.close()
                cache.close()
        finally:
            await engine.close()
        return self._complete(manifest, shards, skipped, asker.counts["sent"], engine)

    def _prepare_out(self, engine: Engine, digest: str, earlier: dict[str, Any] | None) -> dict[str, Any]:
        """Create (or clear) the folder, save the resolved recipe, write the manifest as running."""
        kept = corrections.read_kept(self.out)  # human corrections outlive --overwrite
        if self.overwrite and self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        corrections.write_kept(self.out, kept)
        save_recipe(self.loaded, self.out)
        manifest = {
            "tagllm_version": __version__, "recipe_digest": digest, "name": self.recipe.name,
            "status": "running", "started": (earlier or {}).get("started") or _now(),
            "engine": preflight.portable_engine(engine.describe()), "simulated": engine.simulated,
            "strategy": self.recipe.tagging.strategy, "formats": self.recipe.output.formats,
            "samples_per_shard": self.recipe.output.samples_per_shard,
            "vocabulary": {"name": self.loaded.vocab.name, "digest": self.loaded.vocab.digest()},
            "concepts_digest": self.loaded.concepts.digest(),
        }
        _write_json(self.out / layout.MANIFEST, manifest)
        return manifest

    def _complete(self, manifest: dict[str, Any], shards: int, skipped: int, sent: int,
                  engine: Engine) -> BuildResult:
        """Totals, card and the manifest marked complete (a part leaves this to `tagllm finalize`)."""
        merge_caches(self.out)  # answers of parts or Ray workers of an earlier run, if any
        remove_leftovers(self.out)
        stats = finalize_output(self.out, self.loaded, preflight.portable_engine(engine.describe()))
        manifest.update(status="complete", finished=_now(), shards=shards)
        _write_json(self.out / layout.MANIFEST, manifest)
        return BuildResult(self.out, stats, shards, skipped, sent, engine.simulated, engine.describe())

    async def _shards(self, source: Any, strategy: Any, asker: Asker, reporter: Reporter,
                      engine: Engine) -> tuple[int, int]:
        """Tag this process's shards through one task window (no drain at shard ends).

        A shard complete from an earlier run is kept when the source still gives it the same keys,
        else tagged again (the source grew or changed). Returns (shards in the source, kept).
        """
        out, per_shard = self.out, self.recipe.output.samples_per_shard

        def keep(shard: int, keys: list[str]) -> bool:
            return keys == preflight.shard_keys(out, shard)

        plan = plan_shards(source, per_shard, set(layout.completed_shards(out)), self.part, reporter.skip, keep)
        writers = make_writers(out, self.loaded.vocab, self.recipe.output.formats, self.recipe.output.include_failed)
        window = self.window or max(4, min(engine.concurrency, 256))
        tally = {"sent": asker.counts["sent"], "retries": asker.counts["retries"]}
        fix = corrections.corrector(out, self.loaded.vocab.names)  # reviewed labels, by image digest

        def on_record(record: Record) -> None:
            self._tagged += 1
            reporter.record(record.status, record.error, int(record.usage.get("cached", 0)))

        def sink(shard: int) -> WriterSink:
            self._rewritten.add(shard)
            return WriterSink(out, shard, writers, asker.counts, engine.simulated, on_record, tally, fix,
                              durable=asker.cache.commit if asker.cache is not None else None)

        await walk_shards(plan.jobs, strategy.tag, window, sink)
        total = plan.total or 0
        if self.part is None:
            preflight.drop_shards_from(out, total)
            for w in writers:
                w.finalize(list(range(total)))
        return total, plan.skipped


def gpu_count(loaded: LoadedRecipe, engine_info: dict[str, Any]) -> int:
    """`cost.gpus` when the recipe sets it, else what the engine says (sglang tp x dp, http servers), else 1."""
    return int(loaded.recipe.cost.gpus or engine_info.get("gpus") or 1)


def finalize_output(out: Path, loaded: LoadedRecipe, engine_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Totals, cost and the card, from what is on disk (also used after relabel / retry)."""
    from builder.publish.card import write_card
    from builder.publish.gallery import after_build

    shard_stats = [layout.read_json(layout.shard_stats_path(out, s)) for s in layout.completed_shards(out)]
    stats = merge(shard_stats)
    c = loaded.recipe.cost
    if engine_info is None and (out / layout.MANIFEST).is_file():
        engine_info = layout.read_json(out / layout.MANIFEST).get("engine")
    stats["cost"] = cost_report(stats, c.gpu_price_per_hour, c.human_price_per_image,
                                gpu_count(loaded, engine_info or {}))
    stats["engine"] = engine_info or {}
    _write_json(out / layout.STATS, stats)
    after_build(out)  # gallery/ and the contact sheet the card shows
    write_card(out)
    return stats


async def _cancel_other_tasks() -> None:
    """Cancel and await every other task of this loop (pending tag tasks), quietly."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def failure_report(result: BuildResult, max_failed_fraction: float) -> str | None:
    """Why a build counts as failed (no ok item, or more failed than allowed), or None when it is fine.

    The reasons with one example each are in the summary (`publish.failures.failure_lines`)."""
    s = result.stats
    images, ok, failed = s.get("images", 0), s.get("ok", 0), s.get("failed", 0)
    if not images or (ok and failed <= max_failed_fraction * images):
        return None
    head = (f"no item of {images} is ok" if not ok else
            f"{failed} of {images} items failed, more than output.max_failed_fraction={max_failed_fraction:g}")
    return f"{head}; the output is kept: fix the cause, then rerun the same command (or tagllm retry-failed)"



def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
