"""Static partitioning for array jobs: `tagllm build --part I/N`, then `tagllm finalize OUT`.

Part I tags the shards k with k % N == I into the shared output folder, with its own request
cache, and leaves a marker `parts/part-I-of-N.json`. `finalize` checks that every shard of the
source is complete (naming the missing ones and the parts that own them), folds the caches into
one, names the HF files with the shard total, and writes stats, card and a complete manifest:
the same folder one process would have written.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from builder import storage
from builder.errors import RunError, UserError
from builder.publish import layout
from builder.publish.stats import merge
from builder.publish.store import StoreOutput
from builder.recipe.model import LoadedRecipe, load_recipe
from builder.run.build import Builder, BuildResult, complete_output
from builder.run.lock import output_lock
from builder.run.shards import part_of
from builder.run.store_lock import store_lock
from builder.sources import open_source

PARTS_DIR = layout.PARTS_DIR
# Entries a part may find in a fresh output folder that another part is creating at the same time.
_LAYOUT = {layout.MANIFEST, layout.RECIPE, layout.CONCEPTS, layout.CACHE, layout.INDEX_DIR, layout.WDS_DIR,
           layout.HF_DIR, PARTS_DIR, "caches"}


def part_marker(out: Path, part: tuple[int, int]) -> Path:
    return Path(out) / PARTS_DIR / f"part-{part[0]:05d}-of-{part[1]:05d}.json"


class PartBuilder(Builder):
    """A build that tags only its part's shards and leaves totals and card to `finalize`."""

    def __init__(self, loaded: LoadedRecipe, out: Path, part: tuple[int, int], **kwargs: Any):
        if kwargs.get("overwrite"):
            raise UserError("--part cannot be combined with --overwrite (parts share one output folder)")
        super().__init__(loaded, out, **kwargs)
        self.part = part
        self.cache_name = f"part-{part[0]:05d}-of-{part[1]:05d}"
        self.by = f"part {part[0]}/{part[1]}"

    @staticmethod
    def _ignore(name: str) -> bool:
        return name.startswith(".") or name in _LAYOUT  # lock and temporary files, what parts write

    def _locked(self) -> AbstractContextManager[None]:
        """The folder's lock shared with the other parts, and this part's own exclusively."""
        what = "wait for that part (or pass --wait); parts differ in I of --part I/N"
        if self.store is not None:
            return store_lock(self.store, wait=self.wait, part=self.part, what=what)
        return output_lock(self.out, wait=self.wait, part=self.part, what=what)

    def _locked_run(self) -> BuildResult:
        self._claim()
        return super()._locked_run()

    def _claim(self) -> None:
        """Write the manifest first when the folder is new, so parts starting together accept each other."""
        if (self.out / layout.MANIFEST).is_file():
            return
        if self.out.exists() and any(not self._ignore(p.name) for p in self.out.iterdir()):
            raise RunError(f"{self.out}: exists, is not empty and is not a tagllm output; choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        layout.write_json(self.out / layout.MANIFEST, {"recipe_digest": self.digest(), "status": "running"})
        if self.store is not None:
            self.store.push([layout.MANIFEST])

    def _complete(self, manifest: dict[str, Any], shards: int, skipped: int, sent: int,
                  engine_info: dict[str, Any]) -> BuildResult:
        mine = [k for k in range(shards) if part_of(k, self.part)]
        marker = part_marker(self.out, self.part)
        marker.parent.mkdir(exist_ok=True)
        earlier = layout.read_json(marker).get("runs", []) if marker.is_file() and skipped else []
        runs = [*earlier, self.run_span()]
        layout.write_json(marker, {"part": self.part[0], "parts": self.part[1], "shards": mine, "total": shards,
                                   "host": os.uname().nodename if hasattr(os, "uname") else "", "runs": runs})
        if self.store is not None:
            self.store.push([marker.relative_to(self.out)])
            self.store.drop_bulk()
        done = set(layout.completed_shards(self.out))
        stats = merge((layout.read_json(layout.shard_stats_path(self.out, k)) for k in mine if k in done), runs)
        stats.update(images_per_second=round(stats["images"] / stats["wall_seconds"], 3)
                     if stats["wall_seconds"] > 0 else 0.0)
        return self.result(stats, len(mine), skipped, sent, engine_info)


def shard_total(out: Path, loaded: LoadedRecipe) -> int:
    """The number of shards of the source: from its count, else from a part that walked to its end."""
    source = open_source(loaded.recipe.source, loaded.vocab, loaded.base_dir)
    total = source.shard_count(loaded.recipe.output.samples_per_shard)
    if total is None:
        markers = [layout.read_json(p) for p in sorted((Path(out) / PARTS_DIR).glob("part-*.json"))]
        totals = {m["total"] for m in markers}
        if not totals:
            raise RunError(f"{out}: the source's length is unknown and no part has finished; run the parts first")
        total = max(totals)
    return total


def missing_shards(out: Path, total: int) -> list[int]:
    return sorted(set(range(total)) - set(layout.completed_shards(out)))


def finalize(out: Path | str) -> BuildResult:
    """Check that every shard is complete, then write what one process writes at its end (no part may run)."""
    if storage.is_url(out):
        store = StoreOutput.open(str(out))
        store.check()
        with store_lock(store, what="finalize once every part has finished"):
            store.pull()
            if not (store.work / layout.MANIFEST).is_file():
                raise UserError(f"{store.url}: not a tagllm output (no {layout.MANIFEST})")
            result = _finalize(store.work, Path.cwd())
        result.target = store.url
        return result
    out = layout.require_output(storage.local_path(out))
    with output_lock(out, what="finalize once every part has finished"):
        return _finalize(out)


def _finalize(out: Path, base_dir: Path | None = None) -> BuildResult:
    """`base_dir`: where the recipe's relative local paths start (an object-store output's: where the build ran)."""
    manifest = layout.read_json(out / layout.MANIFEST)
    loaded = load_recipe(out / layout.RECIPE, [])
    if base_dir is not None:
        loaded.base_dir = base_dir
    total = shard_total(out, loaded)
    missing = missing_shards(out, total)
    if missing:
        parts = max((layout.read_json(m)["parts"] for m in (out / PARTS_DIR).glob("part-*.json")), default=None)
        owners = f" (parts {', '.join(sorted({f'{k % parts}/{parts}' for k in missing}))})" if parts else ""
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise RunError(f"{out}: {len(missing)} of {total} shards are not complete: {shown}{owners}; "
                       "rerun those parts (they resume), then finalize again")
    stats = complete_output(out, loaded, total, manifest)
    engine = manifest.get("engine", {})
    return BuildResult(out, stats, total, 0, 0, bool(manifest.get("simulated")), engine)
