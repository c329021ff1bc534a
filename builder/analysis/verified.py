"""Metrics where human labels are only partly checked (Open Images, VOC's "difficult" objects).

A record whose `source` lists `verified_absent` labels (see `builder.records.VERIFIED_ABSENT`) has three
kinds of labels: present (its `reference`), verified absent, and unknown (never checked, or ambiguous).
Here a verified-absent label is a negative, and an unknown label counts nowhere: a machine label on it
is neither a true nor a false positive (it is left out of precision), and its score is left out of the
average precision. Records without the list are exhaustively labeled: every other label is a negative.

The definitions are those of `analysis/metrics.py`, applied to the known (image, label) pairs: an
unknown pair is cleared in both truth and prediction (so it adds no TP/FP/FN), and AP is computed per
class over the images where that class is known.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from builder.analysis.metrics import OVERALL, average_precisions, label_metrics, label_stats, rounded
from builder.records import VERIFIED_ABSENT, Record

NOTE = ("Human labels are partly verified: a label verified absent counts as a negative; labels never "
        "verified (or ambiguous, like VOC's difficult objects) are left out of precision, recall and AP.")
SWEEP_NOTE = "the threshold sweep and tuning still count unverified labels as negatives"


def known_mask(records: list[Record], names: list[str], truth: np.ndarray) -> np.ndarray | None:
    """(images x labels) True where the human answer is known; None when every record is exhaustive."""
    if not any(VERIFIED_ABSENT in (r.source or {}) for r in records):
        return None
    col = {n: i for i, n in enumerate(names)}
    known = np.ones(truth.shape, dtype=bool)
    for i, r in enumerate(records):
        absent = (r.source or {}).get(VERIFIED_ABSENT)
        if absent is None:
            continue
        known[i] = truth[i]
        known[i, [col[n] for n in absent if n in col]] = True
    return known


def masked_ap(truth: np.ndarray, scores: np.ndarray, known: np.ndarray) -> np.ndarray:
    """AP per class over the images where that class is known; NaN without known positives."""
    ap = np.full(truth.shape[1], np.nan)
    for c in range(truth.shape[1]):
        rows = known[:, c]
        if (truth[rows, c]).any():
            ap[c] = average_precisions(truth[rows][:, [c]], scores[rows][:, [c]])[0]
    return ap


def masked_metrics(truth: np.ndarray, pred: np.ndarray, scores: np.ndarray, known: np.ndarray,
                   has_scores: bool) -> dict[str, Any]:
    """CP/CR/CF1, OP/OR/OF1 and mAP over the known pairs only, with the per-class arrays."""
    t, p = truth & known, pred & known
    m = label_metrics(t, p)
    ap = masked_ap(truth, scores, known) if has_scores else np.full(truth.shape[1], np.nan)
    has_pos = t.any(0)
    m["mAP"] = float(np.nanmean(ap)) if has_scores and has_pos.any() else None
    m.update(ap=ap, has_pos=has_pos, known_pairs=int(known.sum()), pairs=int(known.size))
    return m


def apply_verified(result: dict[str, Any], records: list[Record], truth: np.ndarray, pred: np.ndarray,
                   scores: np.ndarray) -> None:
    """Replace an evaluation's metrics by the verified-only ones when the records carry verified negatives."""
    names = result["labels"]
    known = known_mask(records, names, truth)
    if known is None:
        return
    m = masked_metrics(truth, pred, scores, known, result["has_scores"])
    overall = result["overall"]
    overall.update({k: round(float(m[k]), 4) for k in OVERALL})
    overall["mAP"] = rounded(m["mAP"])
    overall["classes_evaluated"] = int(m["has_pos"].sum())
    overall["classes_without_positives"] = int((~m["has_pos"]).sum())
    result["classes_without_positives"] = [n for c, n in enumerate(names) if not m["has_pos"][c]]
    for c, row in enumerate(result["per_class"]):
        rows = known[:, c]
        row.update({k: v for k, v in label_stats(truth[rows, c], pred[rows, c]).items() if k != "support"})
        row["human"] = int(truth[rows, c].sum())
        row["machine"] = row["tp"] + row["fp"]
        row["ap"] = rounded(m["ap"][c])
        row["verified_pairs"] = int(rows.sum())
    result["verified"] = {"note": NOTE, "sweep_note": SWEEP_NOTE, "known_pairs": m["known_pairs"],
                          "pairs": m["pairs"],
                          "records_with_verified_negatives": sum(VERIFIED_ABSENT in (r.source or {}) for r in records)}
