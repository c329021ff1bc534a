"""`tagllm review import`: store a person's labels as corrections and rewrite the affected shards.

The corrections go to OUT/review/corrections.jsonl (keyed by image digest, apart from the engine
cache); the shards holding the reviewed images are rebuilt from cached answers (no engine call)
and the build applies the corrections where it writes records, so HF data, WebDataset shards,
index, stats and card all say the same thing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.analysis.label_studio import read_export
from builder.engines.replay import ReplayEngine
from builder.errors import UserError
from builder.publish import corrections, layout
from builder.recipe.model import load_recipe
from builder.run.build import Builder


def _read_jsonl(path: Path) -> list[corrections.Correction]:
    """Corrections written by another output's review (OUT/review/corrections.jsonl)."""
    fixes = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                fixes.append(corrections.Correction(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise UserError(f"{path}:{n}: not a correction line ({exc})") from exc
    return fixes


def _shards_of(out: Path, keys: set[str]) -> list[int]:
    """Shards holding these keys (every shard when the corrections name no key)."""
    shards = layout.completed_shards(out)
    if not keys:
        return shards
    return [s for s in shards if any(r["key"] in keys for r in _index_rows(out, s))]


def _index_rows(out: Path, shard: int) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(layout.index_path(out, shard), columns=["key"]).to_pylist()


def import_review(out: str | Path, export: str | Path, reviewer: str | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Apply reviewed labels from a Label Studio JSON export (or a corrections .jsonl)."""
    out = layout.require_output(Path(out))
    export = Path(export)
    if not export.is_file():
        raise UserError(f"{export}: no such file")
    loaded = load_recipe(out / layout.RECIPE)
    keyed = export.suffix != ".jsonl"  # another output's corrections match by digest only
    if keyed:
        fixes, unannotated = read_export(export, loaded.vocab, reviewer)
    else:
        fixes, unannotated = _read_jsonl(export), 0
    if not fixes:
        raise UserError(f"{export}: no submitted annotation to import ({unannotated} tasks without one)")
    known = {r.key for r in layout.iter_records(out)}
    strangers = [f.key for f in fixes if keyed and f.key not in known]
    if strangers:
        raise UserError(f"{export}: {len(strangers)} reviewed image(s) are not in {out}, e.g. {strangers[0]!r}")
    corrections.save_corrections(out, fixes)
    shards = _shards_of(out, {f.key for f in fixes} if keyed else set())
    for shard in shards:
        layout.shard_stats_path(out, shard).unlink(missing_ok=True)
    manifest = layout.read_json(out / layout.MANIFEST)
    identity = dict(manifest.get("engine", {}), simulated=manifest.get("simulated", False))
    result = Builder(load_recipe(out / layout.RECIPE), out, engine=ReplayEngine(identity), progress=progress,
                     adopt=True).run()
    stats = result.stats
    return {"imported": len(fixes), "unannotated": unannotated, "shards_rewritten": len(shards),
            "reviewed": stats.get("reviewed", 0), "changed": stats.get("review_changed", 0),
            "added": stats.get("review_added", 0), "removed": stats.get("review_removed", 0),
            "corrections": str(corrections.corrections_path(out)), "simulated": result.simulated}
