"""The reproduction's result as the paper reports it: label quality, downstream mAP, cost."""

from __future__ import annotations

from typing import Any

SIMULATED_HEAD = ("SIMULATED - labels from the simulated engine (human labels plus seeded noise). These numbers "
                  "test the pipeline only; they say nothing about any model.")
QUALITY = ("CP", "CR", "CF1", "OP", "OR", "OF1", "mAP")
COST = (("requests", "requests_per_image", "{:.1f}"), ("prompt tok", "prompt_tokens_per_image", "{:.0f}"),
        ("cached tok", "cached_tokens_per_image", "{:.0f}"),
        ("completion tok", "completion_tokens_per_image", "{:.1f}"),
        ("GPU-s", "gpu_seconds_per_image", "{:.4f}"), ("$/1,000 images", "usd_per_1k_images", "{:.4f}"))


def _f(value: Any, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render_table(result: dict[str, Any]) -> str:
    """Markdown tables (readable as plain text too)."""
    base = result["baseline"]
    engine = result.get("engine") or {}
    c = result["classifier"]
    lines = [f"# TagLLM reproduction: {result['dataset']}", ""]
    if result["simulated"]:
        lines += [f"**{SIMULATED_HEAD}**", ""]
    lines += [f"Engine {engine.get('engine', '?')}, model {engine.get('model') or '-'}; baseline {base}. "
              f"Classifier {c['backbone']} (pretrained {c['pretrained']}), {c['epochs']} epochs, "
              f"batch {c['batch_size']}, lr {c['lr']}, image size {c['image_size']}, seed {c['seed']}: "
              "the same for every row.", "",
              "## Label quality on the train split (MLLM labels vs human labels)", "",
              _row(["labels", "images", *QUALITY]), _row(["---"] + ["---:"] * (len(QUALITY) + 1))]
    for name in ("tagllm", "baseline"):
        q = result["label_quality"][name]
        lines.append(_row([name if name == "tagllm" else base, str(q["images"]), *(_f(q.get(k)) for k in QUALITY)]))
    d = result["downstream"]
    lines += ["", "## Downstream classifier, mAP on the val split's human labels", "",
              _row(["trained on", "train images", "test images", "mAP"]), _row(["---", "---:", "---:", "---:"])]
    for name, title in (("human", "human labels"), ("tagllm", "tagllm labels"), ("baseline", f"{base} labels")):
        lines.append(_row([title, str(d[name]["train_images"]), str(d[name]["test_images"]), _f(d[name]["mAP"])]))
    lines += ["", f"mAP ratio (tagllm / human): {_f(result['mAP_ratio'])}  ",
              f"gap closed over {base}: {_f(result['gap_closed'])} "
              "(= (mAP_tagllm - mAP_baseline) / (mAP_human - mAP_baseline))"
              + (f"; {result['gap_closed_note']}" if result.get("gap_closed_note") else ""), "",
              "## Cost per image of the labeling builds", "",
              _row(["build", *(t for t, _, _ in COST)]), _row(["---"] + ["---:"] * len(COST))]
    for name in ("tagllm", "baseline"):
        cost = result["cost"][name]
        cells = [_f(cost.get(k), fmt) for _, k, fmt in COST]
        lines.append(_row([name if name == "tagllm" else base, *cells]))
    cost = result["cost"]["tagllm"]
    price = cost.get("gpu_price_per_hour")
    lines += ["", f"GPU-seconds: {cost.get('gpu_seconds_basis', 'build wall time x GPUs')}; "
              + (f"$ at {price} USD per GPU-hour (cost.gpu_price_per_hour)." if price is not None else
                 "no $ figure: set cost.gpu_price_per_hour to what you pay.")]
    if result["simulated"]:
        lines += ["", f"**{SIMULATED_HEAD}**"]
    return "\n".join(lines) + "\n"
