"""A short, readable summary of an output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.publish import layout


def summary(out: Path) -> dict[str, Any]:
    out = layout.require_output(Path(out))
    manifest = layout.read_json(out / layout.MANIFEST)
    stats = layout.read_json(out / layout.STATS) if (out / layout.STATS).is_file() else {}
    cost = stats.get("cost", {})
    lines = [
        f"{out}: {manifest.get('name')} — status {manifest.get('status')}, strategy {manifest.get('strategy')}, "
        f"engine {manifest.get('engine', {}).get('engine')} {manifest.get('engine', {}).get('model', '')}".rstrip(),
        f"images {stats.get('images', 0)}: ok {stats.get('ok', 0)}, failed {stats.get('failed', 0)}"
        + (" (" + ", ".join(f"{k} {v}" for k, v in stats.get("failed_by_reason", {}).items()) + ")"
           if stats.get("failed") else ""),
        f"shards {len(layout.completed_shards(out))}; formats {', '.join(manifest.get('formats', []))}",
        f"requests/image {cost.get('requests_per_image')}; tokens/image prompt {cost.get('prompt_tokens_per_image')}"
        f" (cached {cost.get('cached_tokens_per_image')}), completion {cost.get('completion_tokens_per_image')};"
        f" cache hit rate {cost.get('cache_hit_rate')}; images/s {cost.get('images_per_second')}",
        f"GPU-seconds/image {cost.get('gpu_seconds_per_image')} (from {cost.get('gpu_seconds_basis')}); "
        f"replayed answers {cost.get('replayed_requests', 0)} "
        f"({100 * (cost.get('replayed_gpu_seconds_share') or 0):.1f}% of the GPU-seconds); "
        + (f"USD per 1,000 images {cost['usd_per_1k_images']}" if cost.get("usd_per_1k_images") is not None
           else (cost.get("notes") or {}).get("prices", "")),
    ]
    if stats.get("failed"):
        from builder.publish.failures import failure_lines

        lines += failure_lines(out)
    top = list(stats.get("label_counts", {}).items())[:10]
    if top:
        lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in top))
    if stats.get("reviewed"):  # corrections imported with `tagllm review import`
        lines.append(f"reviewed {stats['reviewed']} images: {stats.get('review_changed', 0)} changed "
                     f"(+{stats.get('review_added', 0)} / -{stats.get('review_removed', 0)} labels)")
    if manifest.get("simulated"):
        lines.append("SIMULATED: labels are human labels plus seeded noise, not model output.")
    return {"text": "\n".join(lines), "manifest": manifest, "stats": stats}
