"""The metrics of DESIGN.md on arrays (images x labels): one definition for eval, calibrate and train.

- per class c: precision P_c, recall R_c, F1_c (scikit-learn, zero_division=0);
- CP, CR = means of P_c, R_c over the classes with at least one human positive;
  CF1 = 2·CP·CR / (CP + CR), from those means (not the mean of F1_c);
- OP, OR, OF1 over all (image, label) pairs (micro average, every class);
- mAP = mean over classes with positives of the average precision of the scores (a label that
  was never a candidate has score 0). Classes without positives are skipped and counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support

SWEEP = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))
TUNE_GRID = tuple(round(float(t), 2) for t in np.arange(0.01, 0.991, 0.01))
CURVE_POINTS = 100
OVERALL = ("OP", "OR", "OF1", "CP", "CR", "CF1")


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or np.isnan(x) else round(float(x), digits)


def _cf1(cp: float, cr: float) -> float:
    return 2 * cp * cr / (cp + cr) if cp + cr > 0 else 0.0


def label_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """OP/OR/OF1 (micro, all classes) and CP/CR/CF1 (means over classes with positives) plus per-class arrays."""
    truth = truth.astype(bool)
    pred = pred.astype(bool)
    p, r, f, support = precision_recall_fscore_support(truth, pred, average=None, zero_division=0)
    op, orc, of1, _ = precision_recall_fscore_support(truth, pred, average="micro", zero_division=0)
    has_pos = support > 0
    cp = float(p[has_pos].mean()) if has_pos.any() else 0.0
    cr = float(r[has_pos].mean()) if has_pos.any() else 0.0
    return {"OP": float(op), "OR": float(orc), "OF1": float(of1), "CP": cp, "CR": cr, "CF1": _cf1(cp, cr),
            "precision": p, "recall": r, "f1": f, "support": support}


def label_stats(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Counts and P/R/F1 of one label's column (same definitions as `label_metrics`)."""
    truth, pred = truth.astype(bool), pred.astype(bool)
    tp = int((truth & pred).sum())
    fp = int((~truth & pred).sum())
    fn = int((truth & ~pred).sum())
    p = tp / (tp + fp) if tp + fp else 0.0  # zero_division=0, as scikit-learn in label_metrics
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"support": tp + fn, "tp": tp, "fp": fp, "fn": fn,
            "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}


def average_precisions(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP per class from the scores; NaN for classes without positives."""
    out = np.full(truth.shape[1], np.nan)
    for c in range(truth.shape[1]):
        if truth[:, c].any():
            out[c] = average_precision_score(truth[:, c], scores[:, c])
    return out


def binary_scores(scores: np.ndarray) -> bool:
    """True when every score is 0 or 1: the engine gave no logprobs, so the 'scores' are the answers
    themselves and the mAP is the AP of hard labels (not comparable with a logprob mAP)."""
    return bool(scores.any()) and bool(np.isin(scores, (0.0, 1.0)).all())


def overall(truth: np.ndarray, pred: np.ndarray, scores: np.ndarray | None = None) -> dict[str, Any]:
    """CP/CR/CF1/OP/OR/OF1 rounded, and mAP when there are scores and positives (else None)."""
    m = label_metrics(truth, pred)
    out: dict[str, Any] = {k: round(float(m[k]), 4) for k in OVERALL}
    out["mAP"] = None
    if scores is not None and scores.any() and truth.any():
        out["mAP"] = rounded(np.nanmean(average_precisions(truth, scores)))
    return out


def threshold_sweep(truth: np.ndarray, scores: np.ndarray, grid: tuple[float, ...] = SWEEP) -> list[dict[str, float]]:
    """One global threshold at a time: OP/OR/OF1 and CP/CR/CF1 of `score >= t`."""
    rows = []
    for t in grid:
        m = label_metrics(truth, scores >= t)
        rows.append({"threshold": t, **{k: round(m[k], 4) for k in OVERALL}})
    return rows


def _f1_per_threshold(truth: np.ndarray, scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 of one class at every threshold of the grid (vectorized; same definition as scikit-learn)."""
    pred = scores[None, :] >= grid[:, None]
    pos = truth.astype(bool)[None, :]
    tp = (pred & pos).sum(1)
    denom = pred.sum(1) + pos.sum()
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def tune_thresholds(truth: np.ndarray, scores: np.ndarray, names: list[str], global_threshold: float,
                    grid: tuple[float, ...] = TUNE_GRID) -> dict[str, float]:
    """Per class, the threshold that maximizes its F1 on these scores.

    Among equally good thresholds the middle one is taken (the centre of the best plateau generalizes
    better than its edge). Classes without positives keep `global_threshold`.
    """
    g = np.asarray(grid)
    out = {}
    for c, name in enumerate(names):
        if not truth[:, c].any():
            out[name] = float(global_threshold)
            continue
        f1 = _f1_per_threshold(truth[:, c], scores[:, c], g)
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        out[name] = float(g[best[len(best) // 2]])
    return out


def apply_thresholds(scores: np.ndarray, names: list[str], thresholds: dict[str, float]) -> np.ndarray:
    """Labels kept at the given per-label thresholds (a label never scored has score 0: never kept)."""
    t = np.array([thresholds[n] for n in names])
    return (scores >= t[None, :]) & (scores > 0)


def pr_curve(truth: np.ndarray, scores: np.ndarray, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    precision, recall, _ = precision_recall_curve(truth, scores)
    idx = np.unique(np.linspace(0, len(precision) - 1, min(points, len(precision))).round().astype(int))
    return {"precision": [round(float(x), 4) for x in precision[idx]],
            "recall": [round(float(x), 4) for x in recall[idx]]}
