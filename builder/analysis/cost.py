"""Cost report: MLLM work and money per image, next to the price of human annotation."""

from __future__ import annotations

from typing import Any

PRICE_NOTES = {
    "gpu_price_per_hour": "USD per GPU-hour; default 2.5 is in the range of on-demand H100 cloud prices in 2026 "
                          "(set cost.gpu_price_per_hour or --gpu-price for your own).",
    "human_price_per_image": "USD per image for human multi-label annotation; default 0.10 is a crowd-labeling "
                             "estimate for an 80-label vocabulary (set cost.human_price_per_image or --human-price).",
}


def cost_report(stats: dict[str, Any], gpu_price_per_hour: float, human_price_per_image: float,
                gpus: int = 1) -> dict[str, Any]:
    """Per-image figures from build stats. GPU-seconds = wall seconds spent tagging x GPUs."""
    images = max(int(stats.get("images", 0)), 0)
    wall = float(stats.get("wall_seconds", 0.0))
    per = (lambda v: v / images) if images else (lambda v: 0.0)
    gpu_seconds = wall * gpus
    machine_per_1k = per(gpu_seconds) * 1000 * gpu_price_per_hour / 3600
    human_per_1k = human_price_per_image * 1000
    return {
        "images": images,
        "requests_per_image": round(per(stats.get("requests", 0)), 3),
        "prompt_tokens_per_image": round(per(stats.get("prompt_tokens", 0)), 1),
        "cached_tokens_per_image": round(per(stats.get("cached_tokens", 0)), 1),
        "completion_tokens_per_image": round(per(stats.get("completion_tokens", 0)), 1),
        "cache_hit_rate": round(stats.get("cached_tokens", 0) / stats["prompt_tokens"], 4)
        if stats.get("prompt_tokens") else 0.0,
        "engine_seconds_per_image": round(per(stats.get("engine_seconds", 0.0)), 5),
        "gpu_seconds_per_image": round(per(gpu_seconds), 5),
        "images_per_second": round(images / wall, 3) if wall > 0 else 0.0,
        "gpus": gpus,
        "gpu_price_per_hour": gpu_price_per_hour,
        "human_price_per_image": human_price_per_image,
        "usd_per_1k_images": round(machine_per_1k, 5),
        "human_usd_per_1k_images": round(human_per_1k, 2),
        "human_to_machine_ratio": round(human_per_1k / machine_per_1k, 1) if machine_per_1k > 0 else None,
        "simulated": bool(stats.get("simulated")),
        "notes": PRICE_NOTES,
    }
