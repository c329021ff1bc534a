"""Rank likely label errors, in the machine labels and in the human reference, for review.

The stage-2 scores are the predicted probabilities (P(yes) per candidate label; a label stage 1
did not propose gets `NOT_PROPOSED`), averaged with other builds of the same images when given.
cleanlab's multi-label functions turn them into a per-label quality (self-confidence of the given
label; for human labels with cleanlab's class-imbalance adjustment) and a confident-learning
verdict per image. The builder's own signals add to that:
a score near its threshold, a candidate stage 2 rejected (both visible in the self-confidence),
stage-1 ensemble variants that split on a label, other builds (strategies) that disagree.

Per label, suspicion u = 1 - quality, raised by disagreement as a noisy-OR; per image, the
issue score is the noisy-OR of its three most suspicious labels. The machine ranking never uses
the human reference (so it can be checked against it); the reference ranking uses the machine
evidence to question the human labels.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from builder.analysis.evaluate import load_reference
from builder.errors import UserError
from builder.publish import layout
from builder.recipe.model import load_recipe
from builder.records import Record

KINDS = ("machine", "reference")
NOT_PROPOSED = 0.05  # P(present) for a label stage 1 did not propose
DISAGREEMENT_WEIGHT = 0.5  # how much a split ensemble or another build's disagreement counts
NEAR = 0.15  # "near threshold" when |score - threshold| is below this
TOP_LABELS = 3  # labels per image that make its issue score
ADJUST_MIN = 5  # given positives and negatives a class needs for cleanlab's class-imbalance adjustment


@dataclass
class Evidence:
    """Everything the ranking reads, as N images x K labels arrays (ok, not yet reviewed records)."""

    keys: list[str]
    names: list[str]
    machine: np.ndarray  # bool: the machine's labels
    scores: np.ndarray  # stage-2 P(yes) for candidates, NaN for labels stage 1 did not propose
    thresholds: np.ndarray  # per label
    reference: np.ndarray | None  # bool: human labels (rows without any are all False)
    has_reference: np.ndarray  # bool per image
    ensemble: np.ndarray | None  # share of stage-1 variants that proposed the label (NaN: group unasked)
    others: list[tuple[np.ndarray, np.ndarray]]  # per other build: (labels, probabilities), NaN where absent
    reviewed: int = 0
    simulated: bool = False


def _ensemble_shares(record: Record, index: dict[str, int], groups: dict[str, list[str]]) -> np.ndarray | None:
    """Per label, the share of stage-1 variants that proposed it; None with a single variant."""
    asked: dict[str, set[str]] = defaultdict(set)
    votes: dict[str, int] = defaultdict(int)
    for raw in record.raw:
        parts = str(raw.get("tag", "")).split(":")
        if len(parts) != 3 or parts[0] != "subset":
            continue
        asked[parts[1]].add(parts[2])
        try:
            proposed = json.loads(raw.get("text") or "{}").get("labels", [])
        except (json.JSONDecodeError, AttributeError):
            continue
        for name in proposed if isinstance(proposed, list) else []:
            votes[name] += 1
    if max((len(v) for v in asked.values()), default=0) < 2:
        return None
    shares = np.full(len(index), np.nan)
    for group, variants in asked.items():
        for name in groups.get(group, []):
            shares[index[name]] = votes.get(name, 0) / len(variants)
    return shares


def _records(out: Path) -> tuple[list[Record], int]:
    records, reviewed = [], 0
    for r in layout.iter_records(out):
        if r.status != "ok":
            continue
        if r.review:
            reviewed += 1
            continue
        records.append(r)
    return records, reviewed


def _label_matrix(rows: list[list[str] | None], index: dict[str, int]) -> np.ndarray:
    m = np.zeros((len(rows), len(index)), dtype=bool)
    for i, labels in enumerate(rows):
        for name in labels or ():
            if name in index:
                m[i, index[name]] = True
    return m


def _score_matrix(records: list[Record], index: dict[str, int]) -> np.ndarray:
    s = np.full((len(records), len(index)), np.nan)
    for i, r in enumerate(records):
        for name in r.candidates:
            if name in index:
                s[i, index[name]] = float(r.scores.get(name, 0.0))
    return s


def _other_build(path: Path, keys: list[str], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of another build of the same images, by key (NaN rows where absent)."""
    found = {r.key: r for r in layout.iter_records(Path(path)) if r.status == "ok"}
    if not set(keys) & set(found):
        raise UserError(f"{path}: no image key in common with the ranked build")
    labels = np.full((len(keys), len(index)), np.nan)
    probs = np.full((len(keys), len(index)), np.nan)
    for i, key in enumerate(keys):
        r = found.get(key)
        if r is None:
            continue
        machine = (r.review or {}).get("machine_labels", r.labels)
        labels[i] = _label_matrix([machine], index)[0]
        row = _score_matrix([r], index)[0]
        probs[i] = np.where(np.isnan(row), np.where(labels[i] > 0, 1.0, NOT_PROPOSED), row)
    return labels, probs


def gather(out: Path, reference: str | Path | None = None, others: tuple[Path, ...] = ()) -> Evidence:
    """Read a build (and optional human labels elsewhere, other builds) into arrays."""
    out = layout.require_output(Path(out))
    loaded = load_recipe(out / layout.RECIPE)
    vocab = loaded.vocab
    names = vocab.names
    index = vocab.index()
    records, reviewed = _records(out)
    if not records:
        raise UserError(f"{out}: no ok record left to rank ({reviewed} already reviewed)")
    keys = [r.key for r in records]
    if reference is not None:
        refs, _ = load_reference(reference, vocab)
        ref_rows = [refs.get(k) for k in keys]
    else:
        ref_rows = [r.reference for r in records]
    has_ref = np.array([row is not None for row in ref_rows])
    groups = {g.name: [label.name for label in g.labels] for g in vocab.groups}
    shares = [_ensemble_shares(r, index, groups) for r in records]
    ensemble = np.vstack([s if s is not None else np.full(len(names), np.nan) for s in shares]) \
        if any(s is not None for s in shares) else None
    manifest = layout.read_json(out / layout.MANIFEST)
    return Evidence(
        keys=keys, names=names, machine=_label_matrix([r.labels for r in records], index),
        scores=_score_matrix(records, index), thresholds=np.array([loaded.threshold(n) for n in names]),
        reference=_label_matrix(ref_rows, index) if has_ref.any() else None, has_reference=has_ref,
        ensemble=ensemble, others=[_other_build(p, keys, index) for p in others], reviewed=reviewed,
        simulated=bool(manifest.get("simulated")),
    )


def predicted_probs(ev: Evidence) -> np.ndarray:
    """P(label present): stage-2 scores, NOT_PROPOSED off the candidates, averaged with other builds."""
    probs = np.where(np.isnan(ev.scores), NOT_PROPOSED, ev.scores)
    if ev.others:
        stack = np.stack([probs] + [p for _, p in ev.others])
        probs = np.nanmean(stack, axis=0)
    return np.clip(probs, 1e-4, 1 - 1e-4)


def _as_lists(matrix: np.ndarray) -> list[list[int]]:
    return [list(np.flatnonzero(row)) for row in matrix]


def quality_per_label(given: np.ndarray, probs: np.ndarray, adjust: bool = False) -> np.ndarray:
    """cleanlab's per-class self-confidence of the given labels, N x K (low = likely wrong).

    `adjust`: cleanlab's class-imbalance adjustment (each class's average self-confidence
    subtracted), used for human labels, which were made independently of the scores, and only in
    classes with ADJUST_MIN given positives and negatives (fewer make the average meaningless).
    Machine labels are the scores cut at their threshold, so there the raw scores are kept.
    """
    from cleanlab.multilabel_classification.rank import get_label_quality_scores_per_class

    def per_class(adjusted: bool) -> np.ndarray:
        q = np.asarray(get_label_quality_scores_per_class(_as_lists(given), probs, method="self_confidence",
                                                          adjust_pred_probs=adjusted))
        return q.T if q.shape != given.shape else q

    raw = per_class(False)
    positives = given.sum(axis=0)
    enough = (positives >= ADJUST_MIN) & (len(given) - positives >= ADJUST_MIN)
    if not adjust or not enough.any():
        return raw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adjusted = per_class(True)
    return np.where(enough[None, :], np.nan_to_num(adjusted, nan=1.0), raw)


def confident_learning_flags(given: np.ndarray, probs: np.ndarray) -> np.ndarray | None:
    """cleanlab's confident-learning verdict per image; None when it cannot run on this data."""
    from cleanlab.multilabel_classification.filter import find_label_issues

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(find_label_issues(_as_lists(given), probs, n_jobs=1), dtype=bool)
    except (ValueError, IndexError, ZeroDivisionError):
        return None


def disagreement(ev: Evidence) -> np.ndarray:
    """Per label, in [0, 1]: split ensemble variants and other builds that disagree, noisy-OR."""
    keep = np.ones(ev.machine.shape)
    if ev.ensemble is not None:
        split = 1.0 - np.abs(2.0 * ev.ensemble - 1.0)
        keep *= 1.0 - DISAGREEMENT_WEIGHT * np.nan_to_num(split, nan=0.0)
    if ev.others:
        votes = np.stack([np.abs(labels - ev.machine) for labels, _ in ev.others])
        share = np.nan_to_num(np.nanmean(votes, axis=0), nan=0.0) if votes.size else 0.0
        keep *= 1.0 - DISAGREEMENT_WEIGHT * share
    return 1.0 - keep


def image_scores(suspicion: np.ndarray) -> np.ndarray:
    """Noisy-OR of each image's TOP_LABELS most suspicious labels."""
    top = -np.sort(-suspicion, axis=1)[:, :TOP_LABELS]
    return 1.0 - np.prod(1.0 - top, axis=1)


def rank(ev: Evidence, kind: str) -> dict[str, Any]:
    """Suspicion per label and issue score per image for one kind of labels."""
    if kind not in KINDS:
        raise UserError(f"unknown label kind {kind!r}: choose from {', '.join(KINDS)}")
    probs = predicted_probs(ev)
    if kind == "machine":
        given, rows = ev.machine, np.arange(len(ev.keys))
        extra = disagreement(ev)
    else:
        if ev.reference is None:
            raise UserError("no human labels to rank: the records carry none; give --reference SOURCE")
        rows = np.flatnonzero(ev.has_reference)
        given, probs, extra = ev.reference[rows], probs[rows], np.zeros((len(rows), len(ev.names)))
    quality = quality_per_label(given, probs, adjust=kind == "reference")
    suspicion = 1.0 - quality * (1.0 - extra)  # noisy-OR of "the given label is wrong" and disagreement
    return {"kind": kind, "rows": rows, "given": given, "probs": probs, "suspicion": suspicion,
            "score": image_scores(suspicion), "flags": confident_learning_flags(given, probs)}
