"""PNG plots of an evaluation result (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAX_BARS = 40  # per-class bar charts show the most frequent classes only
MAX_HEATMAP = 30


def _title(result: dict[str, Any], text: str) -> str:
    return f"{text}\n(SIMULATED labels — not a measure of model quality)" if result.get("simulated") else text


def _top_classes(result: dict[str, Any], n: int) -> list[int]:
    rows = result["per_class"]
    order = sorted(range(len(rows)), key=lambda c: (-rows[c]["human"], -rows[c]["machine"], c))
    return sorted(order[:n])


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pr_curves(result: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ap = {row["label"]: row["ap"] for row in result["per_class"]}
    for label, curve in result["curves"].items():
        ax.step(curve["recall"], curve["precision"], where="post", label=f"{label} (AP {ap[label]:.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.05),
           title=_title(result, "Precision-recall of the stage-2 scores"))
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def f1_bars(result: dict[str, Any], path: Path) -> Path:
    idx = _top_classes(result, MAX_BARS)
    rows = [result["per_class"][c] for c in idx]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(rows) + 2), 4.5))
    x = np.arange(len(rows))
    ax.bar(x, [r["f1"] or 0 for r in rows], color="tab:blue", label="F1 as built")
    if rows and "f1_tuned" in rows[0]:
        ax.scatter(x, [r["f1_tuned"] or 0 for r in rows], color="tab:orange", zorder=3, s=12, label="F1 tuned")
    ax.set_xticks(x, [r["label"] for r in rows], rotation=75, ha="right", fontsize=7)
    ax.set(ylim=(0, 1.05), ylabel="F1", title=_title(result, "Per-class F1"))
    ax.legend(fontsize=7)
    return _save(fig, path)


def frequency_bars(result: dict[str, Any], path: Path) -> Path:
    idx = _top_classes(result, MAX_BARS)
    rows = [result["per_class"][c] for c in idx]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(rows) + 2), 4.5))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["human"] for r in rows], width=0.4, label="human")
    ax.bar(x + 0.2, [r["machine"] for r in rows], width=0.4, label="machine")
    ax.set_xticks(x, [r["label"] for r in rows], rotation=75, ha="right", fontsize=7)
    ax.set(ylabel="images", title=_title(result, "Label frequency: machine vs human"))
    ax.legend(fontsize=7)
    return _save(fig, path)


def cooccurrence_heatmap(result: dict[str, Any], path: Path) -> Path:
    idx = _top_classes(result, MAX_HEATMAP)
    names = [result["labels"][c] for c in idx]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.5 * len(names), 2 + 0.25 * len(names)))
    for ax, which in zip(axes, ("human", "machine"), strict=True):
        m = np.asarray(result["cooccurrence"][which], dtype=float)[np.ix_(idx, idx)]
        np.fill_diagonal(m, np.nan)  # the diagonal is the label frequency (its own plot); hide it
        im = ax.imshow(m, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_title(f"{which} labels", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(_title(result, "Label co-occurrence (images with both labels; diagonal hidden)"), fontsize=10)
    return _save(fig, path)


def eval_plots(result: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Every plot the evaluation report links; PR curves only when the records carry scores."""
    out = {}
    if result.get("curves"):
        out["pr_curves"] = pr_curves(result, folder / "pr_curves.png")
    out["f1"] = f1_bars(result, folder / "per_class_f1.png")
    out["frequency"] = frequency_bars(result, folder / "label_frequency.png")
    out["cooccurrence"] = cooccurrence_heatmap(result, folder / "cooccurrence.png")
    return out
