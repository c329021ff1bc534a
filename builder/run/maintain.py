"""Work on a finished output without redoing it: re-threshold from cached answers, retry failures.

Both reopen the affected shards and run the normal build over them: complete shards stay, cached
answers are replayed, and only what is missing reaches an engine (for relabel: nothing at all).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from builder.engines.replay import ReplayEngine
from builder.errors import UserError
from builder.publish import layout
from builder.recipe.model import load_recipe
from builder.run.build import Builder, BuildResult


def _reopen(out: Path, shards: Iterable[int]) -> None:
    for shard in shards:
        layout.shard_stats_path(out, shard).unlink(missing_ok=True)


def _rebuild(out: Path, overrides: list[str], engine=None, progress: bool = False) -> BuildResult:
    loaded = load_recipe(out / layout.RECIPE, overrides)
    builder = Builder(loaded, out, engine=engine, progress=progress, adopt=True)
    return builder.run()


def relabel(out: Path, threshold: float | None = None, thresholds_file: Path | None = None,
            progress: bool = False) -> BuildResult:
    """New thresholds over the cached scores; every shard rewritten, zero engine calls."""
    out = layout.require_output(Path(out))
    if threshold is None and thresholds_file is None:
        raise UserError("relabel: give --threshold and/or --thresholds FILE")
    overrides = []
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise UserError(f"--threshold {threshold}: must be in [0, 1]")
        overrides.append(f"tagging.threshold={threshold}")
    if thresholds_file is not None:
        overrides.append(f"tagging.thresholds_file={Path(thresholds_file).resolve()}")
    manifest = layout.read_json(out / layout.MANIFEST)
    identity = dict(manifest.get("engine", {}), simulated=manifest.get("simulated", False))
    _reopen(out, layout.completed_shards(out))
    result = _rebuild(out, overrides, engine=ReplayEngine(identity), progress=progress)
    if result.stats.get("failed_by_reason", {}).get("engine"):
        raise UserError(f"{out}: some answers were not in the cache; run `tagllm build` on it to finish")
    return result


def failed_shards(out: Path) -> list[int]:
    return [s for s in layout.completed_shards(out)
            if layout.read_json(layout.shard_stats_path(out, s)).get("failed", 0) > 0]


def retry_failed(out: Path, overrides: list[str] | None = None, progress: bool = False) -> BuildResult:
    """Re-run the shards holding failed records; their ok records come back from the cache."""
    out = layout.require_output(Path(out))
    _reopen(out, failed_shards(out))
    return _rebuild(out, list(overrides or []), progress=progress)
