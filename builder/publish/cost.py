"""Cost report: MLLM work and money per image, next to the price of human annotation.

GPU-seconds come from the answers themselves: each answer carries its share of the time the
engine was busy (times the GPUs behind it) from when it was first answered, and keeps it in the
request cache. A relabel, a resume or a retry-failed that replays cached answers therefore reports
what the labels cost, not the seconds the replay took; the replayed part is reported beside it.

Prices have no defaults: no price list available to this project could be checked, so dollar
figures appear only when the recipe sets `cost.gpu_price_per_hour` and `cost.human_price_per_image`.
"""

from __future__ import annotations

from typing import Any

NO_PRICE = ("no price set: give cost.gpu_price_per_hour and cost.human_price_per_image (USD) in the recipe "
            "for dollar figures")


def cost_report(stats: dict[str, Any], gpu_price_per_hour: float | None, human_price_per_image: float | None,
                gpus: int = 1) -> dict[str, Any]:
    """Per-image figures from build stats (their sums over the records' `usage`)."""
    images = max(int(stats.get("images", 0)), 0)
    wall = float(stats.get("wall_seconds", 0.0))
    per = (lambda v: v / images) if images else (lambda v: 0.0)
    gpu_seconds, basis = _gpu_seconds(stats, wall, gpus)
    replayed = float(stats.get("replayed_gpu_seconds", 0.0))
    out = {
        "images": images,
        "requests_per_image": round(per(stats.get("requests", 0)), 3),
        "replayed_requests": int(stats.get("cache_hits", 0)),
        "prompt_tokens_per_image": round(per(stats.get("prompt_tokens", 0)), 1),
        "cached_tokens_per_image": round(per(stats.get("cached_tokens", 0)), 1),
        "completion_tokens_per_image": round(per(stats.get("completion_tokens", 0)), 1),
        "cache_hit_rate": round(stats.get("cached_tokens", 0) / stats["prompt_tokens"], 4)
        if stats.get("prompt_tokens") else 0.0,
        "engine_seconds_per_image": round(per(stats.get("engine_seconds", 0.0)), 5),
        "gpu_seconds_per_image": round(per(gpu_seconds), 5),
        "gpu_seconds_basis": basis,
        "replayed_gpu_seconds_share": round(replayed / gpu_seconds, 4) if gpu_seconds > 0 else 0.0,
        "this_run_gpu_seconds_per_image": round(per(wall * gpus), 5),
        "images_per_second": round(images / wall, 3) if wall > 0 else 0.0,
        "gpus": gpus,
        "simulated": bool(stats.get("simulated")),
    }
    out.update(_money(per(gpu_seconds), gpu_price_per_hour, human_price_per_image))
    return out


def _gpu_seconds(stats: dict[str, Any], wall: float, gpus: int) -> tuple[float, str]:
    """From the answers when every one carries its cost; else the wall time of this run (older caches)."""
    if stats.get("requests") and not stats.get("unmeasured") and "gpu_seconds" in stats:
        return float(stats["gpu_seconds"]), "engine busy time recorded with each answer"
    return wall * gpus, "wall time of this run (some answers carry no recorded cost)"


def _money(gpu_seconds_per_image: float, gpu_price: float | None, human_price: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"gpu_price_per_hour": gpu_price, "human_price_per_image": human_price,
                           "usd_per_1k_images": None, "human_usd_per_1k_images": None, "human_to_machine_ratio": None}
    if gpu_price is not None:
        out["usd_per_1k_images"] = round(gpu_seconds_per_image * 1000 * gpu_price / 3600, 5)
    if human_price is not None:
        out["human_usd_per_1k_images"] = round(human_price * 1000, 2)
    if out["usd_per_1k_images"] and out["human_usd_per_1k_images"] is not None:
        out["human_to_machine_ratio"] = round(out["human_usd_per_1k_images"] / out["usd_per_1k_images"], 1)
    out["notes"] = {"prices": "prices as set in the recipe's cost section (USD)" if gpu_price is not None
                    or human_price is not None else NO_PRICE}
    return out
