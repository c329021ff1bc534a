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
from builder.run.lock import output_lock


def _reopen(out: Path, shards: Iterable[int]) -> None:
    for shard in shards:
        layout.shard_stats_path(out, shard).unlink(missing_ok=True)


def _rebuild(out: Path, overrides: list[str], engine=None, progress: bool = False) -> BuildResult:
    loaded = load_recipe(out / layout.RECIPE, overrides)
    builder = Builder(loaded, out, engine=engine, progress=progress, adopt=True)
    return builder.run()


def refresh_evaluation(out: Path) -> str | None:
    """Labels changed: recompute OUT/eval/report.json (same reference: the records) or retire it.

    A report made against another reference or other thresholds cannot be redone here, so it is
    renamed `report.stale.json` and the card loses its evaluation section. Returns what was done.
    """
    from builder.publish.card import write_card

    report = out / "eval" / "report.json"
    if not report.is_file():
        return None
    old = layout.read_json(report)
    done = None
    if old.get("reference") == "records" and old.get("thresholds_used") == "labels as built":
        try:
            from builder.analysis.evaluate import run_eval

            run_eval(out)
            done = "evaluation recomputed for the new labels (eval/)"
        except (ImportError, UserError):
            done = None
    if done is None:
        report.replace(report.with_name("report.stale.json"))
        done = "evaluation retired (eval/report.stale.json): rerun `tagllm eval` for the new labels"
    write_card(out)
    return done


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
    with output_lock(out):  # no build may write while the shards are reopened
        manifest = layout.read_json(out / layout.MANIFEST)
        identity = dict(manifest.get("engine", {}), simulated=manifest.get("simulated", False))
        _reopen(out, layout.completed_shards(out))
        result = _rebuild(out, overrides, engine=ReplayEngine(identity), progress=progress)
    if result.stats.get("failed_by_reason", {}).get("engine"):
        raise UserError(f"{out}: some answers were not in the cache; run `tagllm build` on it to finish")
    result.notes.append(refresh_evaluation(out))
    return result


def failed_shards(out: Path) -> list[int]:
    return [s for s in layout.completed_shards(out)
            if layout.read_json(layout.shard_stats_path(out, s)).get("failed", 0) > 0]


def retry_failed(out: Path, overrides: list[str] | None = None, progress: bool = False) -> BuildResult:
    """Re-run the shards holding failed records; their ok records come back from the cache."""
    out = layout.require_output(Path(out))
    with output_lock(out):
        _reopen(out, failed_shards(out))
        result = _rebuild(out, list(overrides or []), progress=progress)
    result.notes.append(refresh_evaluation(out))
    return result
