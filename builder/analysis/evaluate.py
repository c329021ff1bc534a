"""Machine labels against human labels: the metrics of `analysis/metrics.py`, tuning, and the report.

Conventions (stated in every report and card): failed records and records without human labels
are excluded and counted; a label the model never proposed as a candidate has score 0 and is
not among the labels; classes without human positives are skipped in CP/CR/mAP and listed; when
the engine gave no logprobs the scores are 0/1 and the mAP is flagged as the AP of hard labels.

Human labels come from the records (`reference`, carried from the source) or from another source
matched by key: another tagllm output folder, a recipe YAML, or an image folder with
`metadata.jsonl`/`metadata.csv`. A key match is checked by image digest: a different image under
the same key is warned about.

Threshold tuning never grades itself: the evaluated images are split (seeded, stratified) into a
dev part, where thresholds are chosen, and a held-out part, where they are measured. When the
build's own thresholds were tuned on some of the evaluated images (a thresholds file or a
calibrated concept sheet records their keys), the report also gives the figures without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from builder.analysis.metrics import (
    apply_thresholds,
    average_precisions,
    binary_scores,
    label_metrics,
    label_stats,
    overall,
    pr_curve,
    rounded,
    threshold_sweep,
    tune_thresholds,
)
from builder.analysis.report import (  # noqa: F401  (warnings: re-exported for the CLI)
    BINARY_NOTICE,
    CONVENTIONS,
    SIMULATED_NOTICE,
    warnings,
    write_report,
    write_thresholds,
)
from builder.analysis.samples import (
    compare_images,
    digests,
    is_output,
    output_samples,
    output_vocabulary,
    source_items,
)
from builder.analysis.split import split_dev_heldout
from builder.analysis.verified import apply_verified
from builder.errors import UserError
from builder.images import image_digest
from builder.publish import layout
from builder.recipe.model import check_thresholds, read_thresholds_file
from builder.recipe.vocab import Vocabulary, read_yaml
from builder.records import Record

CURVE_CLASSES = 8  # precision-recall curves kept for the most frequent classes


# --- reading ---------------------------------------------------------------------------------------

def load_reference(source: str | Path, vocab: Vocabulary) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Key -> human labels, and key -> image digest, from an output folder, a recipe or an image folder."""
    path = Path(source)
    if is_output(path):
        refs = {r.key: r.reference for r in layout.iter_records(path) if r.reference is not None}
        samples, _ = output_samples(path, vocab, "reference")
        where = "records carry no reference labels"
        images = digests(samples)
    else:
        refs, images = {}, {}
        for item in source_items(path, vocab):
            if item.reference is not None and item.error != "source":
                refs[item.key] = item.reference
                if item.image:
                    images[item.key] = image_digest(item.image)
        where = "no human labels found (metadata.jsonl / metadata.csv / label column)"
    if not refs:
        raise UserError(f"{source}: {where}")
    unknown = {n for labels in refs.values() for n in labels} - set(vocab.names)
    if unknown:
        raise UserError(f"{source}: labels not in the vocabulary: {', '.join(sorted(unknown)[:5])}")
    return refs, images


def read_thresholds(source: float | dict[str, float] | str | Path | None, vocab: Vocabulary,
                    default: float) -> dict[str, float] | None:
    """Per-label thresholds from a number, a mapping, or a thresholds YAML (`thresholds:` mapping)."""
    if source is None:
        return None
    if isinstance(source, (int, float)):
        source, where = {n: source for n in vocab.names}, "--threshold"
    elif isinstance(source, (str, Path)):
        source, where = read_thresholds_file(Path(source)), str(source)
    else:
        where = "thresholds"
    source = check_thresholds(source, vocab, where)
    return {n: float(source.get(n, default)) for n in vocab.names}


def tuned_on(out: Path, recipe: dict[str, Any], thresholds: Any = None) -> dict[str, Any] | None:
    """Where the thresholds in use were tuned: the keys recorded by `eval --tune` or `calibrate`."""
    found: list[tuple[str, list[str]]] = []
    sources = []
    if isinstance(thresholds, (str, Path)):
        sources.append(Path(thresholds))
    elif thresholds is None and (recipe.get("tagging") or {}).get("thresholds_file"):
        sources.append(out / recipe["tagging"]["thresholds_file"])  # relative to the saved recipe, in OUT
    for path in sources:
        data = read_yaml(path) if path.is_file() else None
        block = data.get("tuned_on") if isinstance(data, dict) else None
        if isinstance(block, dict) and block.get("keys"):
            found.append((f"thresholds file {path.name} from {block.get('tool', 'tagllm eval --tune')}", block["keys"]))
    sheet = out / layout.CONCEPTS
    if thresholds is None and sheet.is_file():
        prov = (read_yaml(sheet) or {}).get("provenance") or {}
        if prov.get("dev_keys"):
            found.append(("concept sheet (tagllm calibrate)", prov["dev_keys"]))
    if not found:
        return None
    return {"by": [what for what, _ in found], "keys": sorted({k for _, keys in found for k in keys})}


# --- the evaluation ----------------------------------------------------------------------------------

def evaluate(out_dir: str | Path, reference: str | Path | None = None,
             thresholds: float | dict[str, float] | str | Path | None = None,
             tune_dev: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Compare a build's machine labels with human labels; everything the report shows, as a dict.

    `reference`: None (the records' own `reference` labels) or another source matched by key.
    `thresholds`: None to score the records' final labels as built; a number, a mapping or a
    thresholds YAML to re-threshold the stored scores instead (no engine needed).
    `tune_dev`: images of the dev part for threshold tuning (default half), the rest is held out.
    """
    out = layout.require_output(Path(out_dir))
    vocab, recipe = output_vocabulary(out)
    names = vocab.names
    default_t = float((recipe.get("tagging") or {}).get("threshold", 0.5))
    records = list(layout.iter_records(out))
    images_check = None
    if reference is None:
        refs = {r.key: r.reference for r in records if r.reference is not None}
        if not refs:
            raise UserError(f"{out}: no record carries human labels; give --reference SOURCE")
    else:
        refs, ref_images = load_reference(reference, vocab)
        samples, _ = output_samples(out, vocab, "machine")
        images_check = compare_images(digests(s for s in samples if s.key in refs), ref_images)
    ok = [r for r in records if r.status == "ok"]
    evaluated = [r for r in ok if r.key in refs]
    counts = {"records": len(records), "evaluated": len(evaluated), "failed": len(records) - len(ok),
              "no_reference": len(ok) - len(evaluated),
              "reference_not_in_output": len(set(refs) - {r.key for r in records})}
    if not evaluated:
        raise UserError(f"{out}: no successful record has human labels to compare with (keys must match)")
    simulated = any(r.simulated for r in evaluated)
    truth, pred, scores = _matrices(evaluated, refs, names)
    per_label_t = read_thresholds(thresholds, vocab, default_t)
    if per_label_t is not None:
        pred = apply_thresholds(scores, names, per_label_t)
    has_scores = bool(scores.any())
    result = _metrics(truth, pred, scores, vocab, has_scores)
    apply_verified(result, evaluated, truth, pred, scores)  # partly verified human labels (Open Images, VOC)
    result.update({
        "output": out.name,  # published with the data: no local path
        "reference": str(reference) if reference is not None else "records",
        "simulated": simulated,
        "notice": SIMULATED_NOTICE if simulated else None,
        "counts": counts,
        "image_check": images_check,
        "conventions": CONVENTIONS,
        "thresholds_used": ("labels as built" if per_label_t is None else
                            per_label_t[names[0]] if len(set(per_label_t.values())) == 1 else "per label"),
    })
    keys = [r.key for r in evaluated]
    result.update(_untouched(tuned_on(out, recipe, thresholds), keys, truth, pred, scores))
    if has_scores:
        result.update(_tuning(truth, pred, scores, names, keys, result, tune_dev, seed))
    return result


def _matrices(records: list[Record], refs: dict[str, list[str]], names: list[str]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    col = {n: i for i, n in enumerate(names)}
    truth = np.zeros((len(records), len(names)), dtype=bool)
    pred = np.zeros_like(truth)
    scores = np.zeros(truth.shape, dtype=float)
    for i, r in enumerate(records):
        truth[i, [col[n] for n in refs[r.key] if n in col]] = True
        pred[i, [col[n] for n in r.labels if n in col]] = True
        for n, s in r.scores.items():
            if n in col:
                scores[i, col[n]] = s
    return truth, pred, scores


def _metrics(truth: np.ndarray, pred: np.ndarray, scores: np.ndarray, vocab: Vocabulary,
             has_scores: bool) -> dict[str, Any]:
    names = vocab.names
    ap = average_precisions(truth, scores) if has_scores else np.full(len(names), np.nan)
    has_pos = truth.any(0)
    o = overall(truth, pred, scores if has_scores else None)
    o["classes_evaluated"] = int(has_pos.sum())
    o["classes_without_positives"] = int((~has_pos).sum())
    binary = has_scores and binary_scores(scores)
    o["mAP_from_binary_scores"] = binary
    per_class = []
    for c, name in enumerate(names):
        s = label_stats(truth[:, c], pred[:, c])
        per_class.append({"label": name, "group": vocab.group_of(name), "human": s["support"],
                          "machine": s["tp"] + s["fp"], "tp": s["tp"], "fp": s["fp"], "fn": s["fn"],
                          "precision": s["precision"], "recall": s["recall"], "f1": s["f1"], "ap": rounded(ap[c])})
    order = sorted(range(len(names)), key=lambda c: -truth[:, c].sum())
    curves = {names[c]: pr_curve(truth[:, c], scores[:, c]) for c in order[:CURVE_CLASSES]
              if has_scores and truth[:, c].any()}
    t_int, p_int = truth.astype(int), pred.astype(int)
    return {
        "images": int(truth.shape[0]),
        "labels": names,
        "overall": o,
        "classes_without_positives": [n for c, n in enumerate(names) if not has_pos[c]],
        "per_class": per_class,
        "curves": curves,
        "cooccurrence": {"human": (t_int.T @ t_int).tolist(), "machine": (p_int.T @ p_int).tolist()},
        "has_scores": has_scores,
        "binary_scores": binary,
        **({"binary_notice": BINARY_NOTICE} if binary else {}),
    }


def _untouched(tuned: dict[str, Any] | None, keys: list[str], truth: np.ndarray, pred: np.ndarray,
               scores: np.ndarray) -> dict[str, Any]:
    """With thresholds tuned on some of these images: the figures on the others (the ones to quote)."""
    if tuned is None:
        return {}
    used = set(tuned["keys"])
    inside = np.array([k in used for k in keys])
    if not inside.any():
        return {"tuned_on": {"by": tuned["by"], "overlap": 0}}
    out = {"by": tuned["by"], "overlap": int(inside.sum()), "others": int((~inside).sum()),
           "note": "the thresholds in use were tuned on some of these images: quote the figures on the others"}
    if (~inside).any():
        out["overall_others"] = overall(truth[~inside], pred[~inside], scores[~inside] if scores.any() else None)
    return {"tuned_on": out}


def _tuning(truth: np.ndarray, pred: np.ndarray, scores: np.ndarray, names: list[str], keys: list[str],
            result: dict[str, Any], tune_dev: int | None, seed: int) -> dict[str, Any]:
    """Sweep over all images (descriptive); thresholds chosen on a dev part, measured on the held-out rest."""
    sweep = threshold_sweep(truth, scores)
    n = len(keys)
    if n < 2:
        return {"sweep": sweep, "tuning_skipped": "fewer than 2 images: no dev / held-out split possible"}
    dev_n = tune_dev if tune_dev is not None else n // 2
    if not 1 <= dev_n < n:
        raise UserError(f"--tune-dev {dev_n}: must be between 1 and {n - 1} (the other images are held out)")
    rows = [[names[c] for c in np.flatnonzero(truth[i])] for i in range(n)]
    dev, held = split_dev_heldout(rows, dev_n, n - dev_n, seed)
    dev_sweep = threshold_sweep(truth[dev], scores[dev])
    best = max(dev_sweep, key=lambda row: (row["OF1"], -abs(row["threshold"] - 0.5)))
    tuned = tune_thresholds(truth[dev], scores[dev], names, best["threshold"])
    tuned_pred = apply_thresholds(scores, names, tuned)
    m = label_metrics(truth[held], tuned_pred[held])
    for c, row in enumerate(result["per_class"]):
        row["threshold_tuned"] = tuned[names[c]]
        row["f1_tuned"] = rounded(m["f1"][c])

    def held_out(p: np.ndarray) -> dict[str, Any]:
        return overall(truth[held], p[held], scores[held])

    return {
        "sweep": sweep,
        "best_global": {"threshold": best["threshold"], **{k: v for k, v in
                                                            held_out(scores >= best["threshold"]).items()
                                                            if k in ("OF1", "CF1")}},
        "tuned": {
            "thresholds": tuned, "global": best["threshold"], "seed": seed,
            "dev_images": len(dev), "held_out_images": len(held), "dev_keys": [keys[i] for i in dev],
            "dev": overall(truth[dev], tuned_pred[dev], scores[dev]),
            "held_out": held_out(tuned_pred), "held_out_as_built": held_out(pred),
            **{k: held_out(tuned_pred)[k] for k in ("OP", "OR", "OF1", "CP", "CR", "CF1")},
            "note": "chosen on the dev images, measured on the held-out images (the figure to quote); "
                    "the dev figure is in-sample",
        },
    }


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The short form a dataset card or stats.json shows."""
    out = {"images": result["images"], "reference": result["reference"], "simulated": result["simulated"],
           **result["overall"]}
    if "tuned" in result:
        out["tuned_OF1_held_out"] = result["tuned"]["OF1"]
    return out


def run_eval(out_dir: str | Path, reference: str | Path | None = None,
             thresholds: float | dict[str, float] | str | Path | None = None, tune: bool = False,
             report_dir: str | Path | None = None, plots: bool = True, tune_dev: int | None = None,
             seed: int = 0) -> dict[str, Any]:
    """`tagllm eval`: evaluate, write the report (default OUT/eval), and with `tune` the thresholds file.

    The result gains `written`: paths of the files (thresholds file at report_dir/thresholds.yaml).
    """
    result = evaluate(out_dir, reference, thresholds, tune_dev=tune_dev, seed=seed)
    folder = Path(report_dir) if report_dir else Path(out_dir) / "eval"
    written = write_report(result, folder, plots=plots)
    if tune:
        written["thresholds"] = write_thresholds(result, folder / "thresholds.yaml")
    result["written"] = {k: str(v) for k, v in written.items()}
    return result
