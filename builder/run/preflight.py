"""What a build (and `tagllm recipe check`) verifies before writing anything, and rerun bookkeeping.

Each check costs at most one source item or a local lookup; none sends a model request.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from builder.errors import RunError, UserError
from builder.publish import layout
from builder.recipe.model import LoadedRecipe, differences, load_recipe
from builder.records import Item

PEEK = 20  # items read to decide whether a source carries human labels


def peek(source: Any, n: int = PEEK) -> list[Item]:
    """The first `n` items; a source that cannot be read fails here, before any output exists."""
    items = list(islice(iter(source), n))
    if not items:
        raise UserError(f"source: no items found in {source.spec.path!r} (kind {source.spec.kind})")
    return items


def refuse_simulation_without_labels(items: list[Item], source_path: str) -> None:
    """The simulated engine answers from human labels: on a source without any it would tag nothing."""
    if all(item.reference is None and item.error != "source" for item in items):
        raise UserError(
            f"the simulated engine answers from the source's human labels, and {source_path!r} has none "
            f"(first {len(items)} items): add a metadata.jsonl with labels to dry-run, or use a real engine "
            "(--engine sglang --model ID, --engine http --server URL, --engine transformers --model DIR)")


def recipe_change(out: Path, loaded: LoadedRecipe, samples_per_shard: int) -> RunError:
    """Refusal for a rerun with another recipe: the fields that differ and the commands that fit."""
    try:
        before = load_recipe(out / layout.RECIPE)
        changed = differences(before.identity(), loaded.identity())
        if before.recipe.output.samples_per_shard != samples_per_shard:
            changed.append("output.samples_per_shard")
    except UserError:
        changed = []
    shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "") if changed else "unknown fields"
    hints = []
    if changed and set(changed) <= {"tagging.threshold", "thresholds", "tagging.thresholds_file"}:
        hints.append(f"`tagllm relabel {out} --threshold X` re-thresholds without the engine")
    hints += ["--overwrite starts over (cached answers are deleted)", "another --out keeps both"]
    return RunError(f"{out}: was built from a different recipe ({shown} changed); " + "; ".join(hints))


def shard_keys(out: Path, shard: int) -> list[str]:
    """Keys of one finished shard, in order (from its index file)."""
    path = layout.index_path(out, shard)
    if not path.is_file():
        return []
    return pq.read_table(path, columns=["key"]).column("key").to_pylist()


def earlier_status(out: Path) -> dict[str, str]:
    """key -> status of every record an earlier run wrote (index files are renamed only when complete,
    and stay when `retry-failed` reopens their shard)."""
    found: dict[str, str] = {}
    folder = out / layout.INDEX_DIR
    for path in sorted(folder.glob("shard-*.parquet")) if folder.is_dir() else []:
        if path.is_file():
            table = pq.read_table(path, columns=["key", "status"])
            found.update(zip(table.column("key").to_pylist(), table.column("status").to_pylist()))
    return found


def rerun_counts(out: Path, before: dict[str, str], rewritten: set[int]) -> dict[str, int]:
    """new: keys not in the earlier build; kept: earlier ok records (shard kept, or answers replayed from
    the cache); redone: earlier failed records in shards tagged again this run."""
    counts: Counter[str] = Counter()
    for shard in layout.completed_shards(out):
        for key in shard_keys(out, shard):
            if key not in before:
                counts["new"] += 1
            elif shard in rewritten and before[key] != "ok":
                counts["redone"] += 1
            else:
                counts["kept"] += 1
    return {k: counts[k] for k in ("new", "kept", "redone")}


def drop_shards_from(out: Path, first: int) -> int:
    """Remove finished shards at or after `first` (the source got shorter); returns how many."""
    stale = [s for s in layout.completed_shards(out) if s >= first]
    for shard in stale:
        layout.shard_stats_path(out, shard).unlink(missing_ok=True)
        layout.index_path(out, shard).unlink(missing_ok=True)
        layout.tar_path(out, shard).unlink(missing_ok=True)
        for p in (out / layout.HF_DIR).glob(f"train-{shard:05d}*.parquet") if (out / layout.HF_DIR).is_dir() else []:
            p.unlink()
    return len(stale)


def check_recipe(loaded: LoadedRecipe, open_source: bool = True) -> list[str]:
    """`tagllm recipe check`: templates, source (first items), engine settings; raises UserError on a
    problem, returns notes. No model request is sent and nothing is written."""
    from builder.engines.preflight import check_engine, check_servers
    from builder.method import TaggingContext
    from builder.sources import open_source as make_source

    TaggingContext(loaded)  # templates parse
    recipe = loaded.recipe
    notes, items = ["source: not opened (--no-source)"], []
    if open_source:
        source = make_source(recipe.source, loaded.vocab, loaded.base_dir)
        items = peek(source)
        first, total = items[0], source.total()
        notes = [f"source: {total if total is not None else 'an unknown number of'} items; first {first.key!r}"
                 + (f" fails: {first.error}: {first.detail}" if first.error else f" ({len(first.image or b'')} bytes)")]
        labeled = sum(1 for item in items if item.reference is not None)
        notes.append(f"human labels on {labeled} of the first {len(items)} items")
    engine = recipe.engine
    if items and engine.kind == "simulated" and not engine.simulation.allow_unlabeled:
        refuse_simulation_without_labels(items, recipe.source.path)
    elif engine.kind == "http":
        check_servers(engine.servers, engine.api_key_env)
        notes.append(f"engine http: {len(engine.servers)} server URL(s) well-formed (not contacted)")
    elif engine.kind in ("sglang", "transformers"):
        try:
            check_engine(engine.kind, engine.model, args=engine.args)
            notes.append(f"engine {engine.kind}: package, GPU and model {engine.model!r} found")
        except UserError as exc:
            notes.append(f"warning: not runnable on this machine: {exc}")
    return notes


def portable_engine(info: dict[str, Any]) -> dict[str, Any]:
    """Engine description for published files: a local model folder is named, not located."""
    model = info.get("model")
    if isinstance(model, str) and Path(model).expanduser().is_absolute():
        return {**info, "model": Path(model).name, "model_source": "local folder"}
    return info
