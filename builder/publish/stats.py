"""Counts per shard and totals: what the card, `inspect` and the cost report are built from.

Times are not summed: shards overlap (in one process's task window, across Ray workers and
parts), so the build's `wall_seconds` is the time during which any of its runs or shards was
under way, the union of their [started, finished] spans; per-worker and per-part figures are the
same union over that worker's or part's own spans.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from itertools import combinations
from typing import Any

from builder.records import Record

SUM_KEYS = ("images", "ok", "failed", "requests", "cache_hits", "sent", "retries", "prompt_tokens",
            "cached_tokens", "completion_tokens", "engine_seconds", "unmapped", "gpu_seconds",
            "replayed_gpu_seconds", "unmeasured", "reviewed", "review_changed", "review_added", "review_removed")
COUNT_KEYS = ("failed_by_reason", "label_counts", "candidate_counts", "reference_counts", "pair_counts")
PAIR = " + "  # how a co-occurring label pair is written as a key


class ShardStats:
    """Accumulates one shard's records."""

    def __init__(self, shard: int):
        self.shard = shard
        self.data: dict[str, Any] = {k: 0 for k in SUM_KEYS}
        self.counters: dict[str, Counter[str]] = {k: Counter() for k in COUNT_KEYS}
        self.data["with_reference"] = 0

    def add(self, record: Record) -> None:
        d = self.data
        d["images"] += 1
        d[record.status] += 1
        if record.status != "ok":
            self.counters["failed_by_reason"][record.error or "unknown"] += 1
        usage = record.usage
        d["requests"] += int(usage.get("requests", 0))
        d["cache_hits"] += int(usage.get("cached", 0))
        for k in ("prompt_tokens", "cached_tokens", "completion_tokens"):
            d[k] += int(usage.get(k, 0))
        for k in ("engine_seconds", "gpu_seconds", "replayed_gpu_seconds"):
            d[k] += float(usage.get(k, 0.0))
        d["unmeasured"] += int(usage.get("unmeasured", 0))
        self.counters["label_counts"].update(record.labels)
        self.counters["pair_counts"].update(f"{a}{PAIR}{b}" for a, b in combinations(record.labels, 2))
        self.counters["candidate_counts"].update(record.candidates)
        if record.reference is not None:
            d["with_reference"] += 1
            self.counters["reference_counts"].update(record.reference)
        for raw in record.raw:
            d["unmapped"] += len(raw.get("unmapped", ()))
        if record.review:  # a person's labels replaced the machine's (builder.publish.corrections)
            added, removed = len(record.review.get("added", ())), len(record.review.get("removed", ()))
            d["reviewed"] += 1
            d["review_changed"] += int(bool(added or removed))
            d["review_added"] += added
            d["review_removed"] += removed

    def finish(self, wall_seconds: float, sent: int, retries: int, simulated: bool,
               finished: float | None = None, by: str | None = None) -> dict[str, Any]:
        """The shard's stats; it ran for `wall_seconds` up to `finished` (epoch seconds, default now),
        tagged by `by` (a Ray worker, a part) when named."""
        finished = time.time() if finished is None else finished
        out = dict(self.data, shard=self.shard, wall_seconds=round(wall_seconds, 4), sent=sent,
                   retries=retries, simulated=simulated, started=round(finished - wall_seconds, 3),
                   finished=round(finished, 3))
        if by:
            out["by"] = by
        for k in ("engine_seconds", "gpu_seconds", "replayed_gpu_seconds"):
            out[k] = round(out[k], 4)
        out.update({k: dict(v) for k, v in self.counters.items()})
        return out


def busy_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """Length of the union of [start, end] spans: time during which at least one was under way."""
    total, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            total, reach = total + max(end - start, 0.0), end
        elif end > reach:
            total, reach = total + end - reach, end
    return total


def _spans(items: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    return [(float(i["started"]), float(i["finished"])) for i in items if "started" in i and "finished" in i]


def timing(shards: list[dict[str, Any]], runs: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """`wall_seconds` of a build from its runs' and shards' spans, and the same per worker or part."""
    runs = list(runs)
    untimed = sum(float(s.get("wall_seconds", 0.0)) for s in shards if "started" not in s)  # older shards
    out: dict[str, Any] = {"wall_seconds": round(busy_seconds(_spans(shards) + _spans(runs)) + untimed, 4)}
    groups: dict[str, Any] = {}
    for label in sorted({s["by"] for s in shards if s.get("by")} | {r["by"] for r in runs if r.get("by")}):
        mine = [s for s in shards if s.get("by") == label]
        wall = busy_seconds(_spans(mine) + _spans(r for r in runs if r.get("by") == label))
        images = sum(int(s.get("images", 0)) for s in mine)
        groups[label] = {"shards": len(mine), "images": images, "wall_seconds": round(wall, 4),
                         "images_per_second": round(images / wall, 3) if wall > 0 else 0.0}
    if groups:
        out["tagged_by"] = groups
    return out


def merge(shards: Iterable[dict[str, Any]], runs: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """Totals over shard stats, timed by `timing`; `simulated` is true when any shard was simulated."""
    shards = list(shards)
    total: dict[str, Any] = {k: 0 for k in SUM_KEYS}
    total["with_reference"] = 0
    counters: dict[str, Counter[str]] = {k: Counter() for k in COUNT_KEYS}
    total["shards"] = 0
    total["simulated"] = False
    for s in shards:
        total["shards"] += 1
        for k in SUM_KEYS + ("with_reference",):
            total[k] += s.get(k, 0)
        for k in COUNT_KEYS:
            counters[k].update(s.get(k, {}))
        total["simulated"] = total["simulated"] or bool(s.get("simulated"))
    for k in ("engine_seconds", "gpu_seconds", "replayed_gpu_seconds"):
        total[k] = round(total[k], 4)
    total.update(timing(shards, runs))
    total.update({k: dict(v.most_common()) for k, v in counters.items()})
    return total


def top_pairs(stats: dict[str, Any], top: int = 20) -> list[tuple[str, str, int]]:
    """Most frequent co-occurring label pairs among ok records, from the totals."""
    pairs = Counter(stats.get("pair_counts", {})).most_common(top)
    return [(*key.split(PAIR, 1), n) for key, n in pairs]
