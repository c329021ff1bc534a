"""Counts per shard and totals: what the card, `inspect` and the cost report are built from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import combinations
from typing import Any

from builder.records import Record

SUM_KEYS = ("images", "ok", "failed", "requests", "cache_hits", "sent", "retries", "prompt_tokens",
            "cached_tokens", "completion_tokens", "engine_seconds", "wall_seconds", "unmapped", "gpu_seconds",
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

    def finish(self, wall_seconds: float, sent: int, retries: int, simulated: bool) -> dict[str, Any]:
        out = dict(self.data, shard=self.shard, wall_seconds=round(wall_seconds, 4), sent=sent,
                   retries=retries, simulated=simulated)
        for k in ("engine_seconds", "gpu_seconds", "replayed_gpu_seconds"):
            out[k] = round(out[k], 4)
        out.update({k: dict(v) for k, v in self.counters.items()})
        return out


def merge(shards: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals over shard stats; `simulated` is true when any shard was simulated."""
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
    for k in ("engine_seconds", "wall_seconds", "gpu_seconds", "replayed_gpu_seconds"):
        total[k] = round(total[k], 4)
    total.update({k: dict(v.most_common()) for k, v in counters.items()})
    return total


def top_pairs(stats: dict[str, Any], top: int = 20) -> list[tuple[str, str, int]]:
    """Most frequent co-occurring label pairs among ok records, from the totals."""
    pairs = Counter(stats.get("pair_counts", {})).most_common(top)
    return [(*key.split(PAIR, 1), n) for key, n in pairs]
