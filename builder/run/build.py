"""Drive a build: source -> strategy (through cache and engine) -> writers, shard by shard.

The shard is the unit of commit: its files are written under temporary names, renamed when
complete, and its stats json is written last. A rerun on the same output folder skips complete
shards and replays cached answers for the shard that was cut short, so only requests that never
finished are sent again. Every source item yields exactly one record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder import __version__, storage
from builder.ask.cache_files import merge_caches, open_cache
from builder.engines.base import Engine
from builder.engines.references import source_references
from builder.engines.registry import open_engine
from builder.errors import RunError, UserError, os_failure
from builder.method import TaggingContext
from builder.publish import corrections, layout
from builder.publish.cost import cost_report
from builder.publish.stats import merge
from builder.publish.store import StoreOutput, store_of
from builder.publish.writers import make_writers
from builder.recipe.model import LoadedRecipe
from builder.run import preflight, remote
from builder.run.lock import output_lock, writing_now
from builder.run.progress import Reporter
from builder.run.shards import ShardChoice, remove_leftovers
from builder.run.store_lock import store_lock
from builder.run.tagging import Tagging, gpu_count, tag_shards
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
    target: str | None = None  # the object-store URL of the output (then `out` is this process's working folder)


def _check_out(out: Path, digest: str, overwrite: bool, adopt: bool = False,
               loaded: LoadedRecipe | None = None,
               ignore: Callable[[str], bool] = layout.is_lock) -> dict[str, Any] | None:
    """Check the output folder (read only); return the manifest of an earlier run to resume, or None.

    Entries `ignore` accepts (lock files) do not make a folder "not empty"."""
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
    if out.exists() and any(not ignore(p.name) for p in out.iterdir()):
        raise RunError(f"{out}: exists, is not empty and is not a tagllm output; choose another --out")
    return None


def save_recipe(loaded: LoadedRecipe, out: Path, relative_to: Path | None = None) -> None:
    """The resolved recipe beside the data, so `tagllm build OUT/recipe.yaml` re-runs it from anywhere.

    Local paths in it are relative to `out`, or to `relative_to` (an object-store output: where the build ran)."""
    data = loaded.portable(relative_to or out)
    if data["tagging"].get("concept_sheet"):
        loaded.concepts.save(out / layout.CONCEPTS)
        data["tagging"]["concept_sheet"] = layout.CONCEPTS
    (out / layout.RECIPE).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


@dataclass
class Checked:
    """What `Builder.check` found and the build starts from; nothing is written yet."""

    ctx: TaggingContext
    engine: Engine
    source: Any
    digest: str
    earlier: dict[str, Any] | None  # the manifest of an earlier run into the folder, to resume


class Builder:
    """One build of one recipe into one output folder."""

    def __init__(self, loaded: LoadedRecipe, out: Path | str, engine: Engine | None = None,
                 overwrite: bool = False, progress: bool = True, window: int | None = None,
                 adopt: bool = False, wait: bool = False):
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.store = StoreOutput.open(str(out)) if storage.is_url(out) else None
        self.out = self.store.work if self.store is not None else storage.local_path(out)
        self.overwrite = overwrite
        self.progress = progress
        self._engine = engine
        self.window = window
        self.checked: Checked | None = None
        self.adopt = adopt  # continue an output made by another recipe digest (relabel, retry-failed)
        self.tagging: Tagging | None = None  # set once the engine runs; knows the shards tagged this run
        self.part: tuple[int, int] | None = None  # (I, N): tag only shards k with k % N == I
        self.cache_name = "build" if self.store else None  # own cache file OUT/caches/NAME.sqlite (always in a store)
        self.wait = wait  # another build holds the folder: wait for it instead of refusing
        self.remove_empty = False  # an input error emptied a new folder: remove it once the lock is gone
        self.by: str | None = None  # who tags, named in shard stats (a part)
        self.started = 0.0  # epoch seconds when this run got the folder's lock

    def run_span(self) -> dict[str, Any]:
        """This run from its start (the lock taken) to now, for the build's figures (`stats.timing`)."""
        span = {"started": round(self.started, 3), "finished": round(time.time(), 3)}
        return {**span, "by": self.by} if self.by else span

    @staticmethod
    def _ignore(name: str) -> bool:
        """Entries of a folder that do not make it "not empty" (another part may be creating it)."""
        return layout.is_lock(name)

    def digest(self) -> str:
        return self.loaded.digest() + f"-{self.recipe.output.samples_per_shard}"

    def check(self) -> Engine:
        """Validate templates, engine choice, source and output folder; writes nothing."""
        if self.checked is None:
            digest = self.digest()
            ctx = TaggingContext(self.loaded)
            engine = self._engine or open_engine(self.recipe.engine, self.loaded.vocab,
                                                 references=functools.partial(source_references, self.loaded))
            source = open_source(self.recipe.source, self.loaded.vocab, self.loaded.base_dir)
            # While another build writes here its files may be half made: the locked run checks them.
            earlier = None if writing_now(self.out) else _check_out(self.out, digest, self.overwrite, self.adopt,
                                                                     self.loaded, self._ignore)
            first = preflight.peek(source)
            if engine.simulated and not self.adopt and not self.recipe.engine.simulation.allow_unlabeled:
                preflight.refuse_simulation_without_labels(first, self.recipe.source.path)
            self.checked = Checked(ctx, engine, source, digest, earlier)
        return self.checked.engine

    def run(self) -> BuildResult:
        """Lock the folder, check everything, start the engine, then write; input errors leave nothing behind."""
        existed = self.out.exists()
        try:
            if self.store is not None:
                self.store.check()
            try:
                with self._locked():
                    if self.store is not None:  # what the store holds now that no other build writes there
                        remote.pull_output(self.store, self._ignore, self.overwrite)
                    self.started = time.time()
                    return self._locked_run()
            finally:  # a folder made for the lock alone, or emptied after an input error, goes too
                if (self.remove_empty or not existed) and self.out.is_dir() and not any(self.out.iterdir()):
                    self.out.rmdir()
        except (OSError, sqlite3.OperationalError) as exc:  # a full disk, no permission, too many files
            where = self.out / layout.CACHE if isinstance(exc, sqlite3.Error) else self.out
            problem = os_failure(exc, where, "rerun the same command (it resumes)")
            if problem is None:
                raise
            raise problem from exc

    def result(self, stats: dict[str, Any], shards: int, skipped: int, sent: int,
               engine_info: dict[str, Any]) -> BuildResult:
        return BuildResult(self.out, stats, shards, skipped, sent, bool(self.checked and self.checked.engine.simulated),
                           engine_info, target=self.store.url if self.store is not None else None)

    def _locked(self) -> AbstractContextManager[None]:
        """The output folder's writer lock (exclusive; a part takes its own, see `PartBuilder`)."""
        return store_lock(self.store, wait=self.wait) if self.store else output_lock(self.out, wait=self.wait)

    def _recheck(self) -> Checked:
        """`check` under the lock: what the folder holds now (another build may have finished in it)."""
        self.check()
        checked = self.checked
        assert checked is not None
        checked.earlier = _check_out(self.out, checked.digest, self.overwrite, self.adopt, self.loaded, self._ignore)
        return checked

    def _locked_run(self) -> BuildResult:
        checked = self._recheck()
        fresh = self.overwrite or not (self.out / layout.MANIFEST).is_file()
        before = {} if fresh else preflight.earlier_status(self.out)
        try:
            result = asyncio.run(self._main(checked))
        except UserError:
            if fresh and not self._tagged() and self.out.exists():
                layout.clear_folder(self.out)  # an input error before any item was tagged: leave no folder
                self.remove_empty = True
            raise
        if before:
            result.rerun = preflight.rerun_counts(self.out, before, self._tagged())
        return result

    def _tagged(self) -> set[int]:
        return self.tagging.tagged if self.tagging is not None else set()

    async def _main(self, checked: Checked) -> BuildResult:
        engine = checked.engine
        await engine.start()
        try:
            started = engine.describe()  # what the manifest says while the build runs
            manifest = self._prepare_out(checked, started)
            cache = open_cache(self.out, self.cache_name)
            try:
                self.tagging = Tagging.open(self.loaded, self.out, engine, cache, checked.ctx, started, self.window)
                self.tagging.by = self.by
                self.tagging.upload = upload = remote.uploader(self.store, cache, self.cache_name or "build",
                                                               checked.source, self.recipe.output.samples_per_shard)
                reporter = Reporter(total=checked.source.total(), show=self.progress,
                                    requests=self.tagging.asker.counts)
                try:
                    plan = await tag_shards(self.tagging, checked.source, ShardChoice(part=self.part), reporter)
                    if upload is not None:
                        upload.wait()  # every committed shard is in the store before the totals are made
                except BaseException:  # Ctrl-C, an error: stop tagging before the cache closes under it
                    await _cancel_other_tasks()
                    raise
                finally:
                    reporter.close()
                    if upload is not None:
                        upload.close()
            finally:
                cache.close()
            # Read again at the end: an engine's description may count what it did (http: requests per server).
            finished = engine.describe()
        finally:
            await engine.close()
        return self._complete(manifest, plan.total or 0, plan.skipped, self.tagging.asker.counts["sent"], finished)

    def _prepare_out(self, checked: Checked, engine_info: dict[str, Any]) -> dict[str, Any]:
        """Create (or clear) the folder, save the resolved recipe, write the manifest as running."""
        kept = corrections.read_kept(self.out)  # human corrections outlive --overwrite
        if self.overwrite and self.out.exists():
            layout.clear_folder(self.out)  # not the lock: this build holds it
            if self.store is not None:
                self.store.clear()
        self.out.mkdir(parents=True, exist_ok=True)
        corrections.write_kept(self.out, kept)
        save_recipe(self.loaded, self.out, Path.cwd() if self.store is not None else None)
        manifest = {
            "tagllm_version": __version__, "recipe_digest": checked.digest, "name": self.recipe.name,
            "status": "running", "started": (checked.earlier or {}).get("started") or _now(),
            "engine": preflight.portable_engine(engine_info), "simulated": checked.engine.simulated,
            "strategy": self.recipe.tagging.strategy, "formats": self.recipe.output.formats,
            "samples_per_shard": self.recipe.output.samples_per_shard,
            "vocabulary": {"name": self.loaded.vocab.name, "digest": self.loaded.vocab.digest()},
            "concepts_digest": self.loaded.concepts.digest(),
            "runs": (checked.earlier or {}).get("runs", []),  # earlier runs' spans (this one's added at its end)
        }
        layout.write_json(self.out / layout.MANIFEST, manifest)
        if self.store is not None:
            self.store.push(p for p in (layout.RECIPE, layout.CONCEPTS, layout.MANIFEST) if (self.out / p).is_file())
        return manifest

    def _complete(self, manifest: dict[str, Any], shards: int, skipped: int, sent: int,
                  engine_info: dict[str, Any]) -> BuildResult:
        """Totals, card and the manifest marked complete (a part leaves this to `tagllm finalize`).

        Runs that rewrote every shard (a relabel, a first build) drop the earlier runs' spans."""
        manifest["runs"] = [*(manifest.get("runs", []) if skipped else []), self.run_span()]
        stats = complete_output(self.out, self.loaded, shards, manifest, preflight.portable_engine(engine_info))
        return self.result(stats, shards, skipped, sent, engine_info)


def complete_output(out: Path, loaded: LoadedRecipe, shards: int, manifest: dict[str, Any],
                    engine_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Once every one of the source's `shards` is in (whichever runner tagged them): drop shards past the
    source's end, name the files with the shard total, fold worker caches in, write stats and card, and
    mark the manifest complete. Returns the stats. (An object store's: in the working folder, see run.remote.)"""
    store = store_of(out)
    if store is not None:
        remote.gather(store, shards)
    preflight.drop_shards_from(out, shards)
    output = loaded.recipe.output
    for writer in make_writers(out, loaded.vocab, output.formats, output.include_failed):
        writer.finalize(list(range(shards)))
    merge_caches(out)  # answers of parts or Ray workers, of this run or an earlier one
    remove_leftovers(out)
    if store is not None:
        remote.put_folded(store, shards)
    stats = finalize_output(out, loaded, engine_info, layout.recorded_runs(out, manifest))
    manifest.update(status="complete", finished=_now(), shards=shards)
    layout.write_json(out / layout.MANIFEST, manifest)
    if store is not None:
        store.push_finished()
    return stats


def finalize_output(out: Path, loaded: LoadedRecipe, engine_info: dict[str, Any] | None = None,
                    runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Totals, cost and the card, from the shard stats and the runs' spans (default: those on disk)."""
    from builder.publish.card import write_card
    from builder.publish.gallery import after_build

    shard_stats = [layout.read_json(layout.shard_stats_path(out, s)) for s in layout.completed_shards(out)]
    stats = merge(shard_stats, layout.recorded_runs(out) if runs is None else runs)
    c = loaded.recipe.cost
    if engine_info is None and (out / layout.MANIFEST).is_file():
        engine_info = layout.read_json(out / layout.MANIFEST).get("engine")
    stats["cost"] = cost_report(stats, c.gpu_price_per_hour, c.human_price_per_image,
                                gpu_count(loaded, engine_info or {}))
    stats["engine"] = engine_info or {}
    layout.write_json(out / layout.STATS, stats)
    after_build(out)  # gallery/ and the contact sheet the card shows
    write_card(out, loaded=loaded, stats=stats)
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
