"""Machine labels against human labels: the metrics of DESIGN.md, threshold tuning, and the report.

Definitions (DESIGN.md "Metrics"):
- per class c: precision P_c, recall R_c, F1_c (scikit-learn, zero_division=0);
- CP, CR = means of P_c, R_c over the classes with at least one human positive;
  CF1 = 2·CP·CR / (CP + CR), computed from those means (not the mean of F1_c);
- OP, OR, OF1 over all (image, label) pairs (micro average, every class);
- mAP = mean over classes with positives of the average precision of the stage-2 scores (a label
  that was never a candidate has score 0). Classes without positives are skipped and listed.
Failed records and records without human labels are excluded and counted.

Human labels come from the records (`reference`, carried from the source) or from another source
matched by key: another tagllm output folder, a recipe YAML, or an image folder with
`metadata.jsonl`/`metadata.csv`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support

from builder.errors import UserError
from builder.publish import layout
from builder.recipe.model import check_thresholds, read_thresholds_file
from builder.recipe.vocab import Vocabulary, read_yaml, vocabulary_from_data
from builder.records import Item, Record

SIMULATED_NOTICE = ("Labels from the simulated engine — not a measure of model quality. The simulated engine "
                    "answers from the human labels plus seeded noise; these numbers only test the pipeline.")
SWEEP = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))
TUNE_GRID = tuple(round(float(t), 2) for t in np.arange(0.01, 0.991, 0.01))
CURVE_CLASSES = 8  # precision-recall curves kept for the most frequent classes
CURVE_POINTS = 100


# --- reading ---------------------------------------------------------------------------------------

def output_vocabulary(out: Path) -> tuple[Vocabulary, dict[str, Any]]:
    """The vocabulary of a build and its resolved recipe data (read as data, no referenced files needed)."""
    data = read_yaml(Path(out) / layout.RECIPE)
    if not isinstance(data, dict) or not isinstance(data.get("vocabulary"), dict):
        raise UserError(f"{out}/{layout.RECIPE}: no inline vocabulary (not a resolved recipe)")
    return vocabulary_from_data(data["vocabulary"], f"{out}/{layout.RECIPE}: vocabulary"), data


def source_items(source: str | Path, vocab: Vocabulary) -> Iterator[Item]:
    """Items (key, image bytes, human labels) of a recipe's source or of an image folder."""
    from builder.recipe.model import SourceSpec, load_recipe
    from builder.sources import open_source

    path = Path(source)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        loaded = load_recipe(path)
        if loaded.vocab.names != vocab.names:
            raise UserError(f"{path}: its vocabulary differs from the evaluated dataset's")
        yield from open_source(loaded.recipe.source, vocab, loaded.base_dir)
    elif path.is_dir():
        yield from open_source(SourceSpec(kind="folder", path=str(path.resolve())), vocab, path.resolve())
    else:
        raise UserError(f"{source}: not a tagllm output folder, recipe YAML or image folder")


def load_reference(source: str | Path, vocab: Vocabulary) -> dict[str, list[str]]:
    """Key -> human labels from another output folder, a recipe YAML, or an image folder."""
    path = Path(source)
    if (path / layout.MANIFEST).is_file():
        refs = {r.key: r.reference for r in layout.iter_records(path) if r.reference is not None}
        where = "records carry no reference labels"
    else:
        refs = {item.key: item.reference for item in source_items(path, vocab)
                if item.reference is not None and item.error != "source"}
        where = "no human labels found (metadata.jsonl / metadata.csv / label column)"
    if not refs:
        raise UserError(f"{source}: {where}")
    unknown = {n for labels in refs.values() for n in labels} - set(vocab.names)
    if unknown:
        raise UserError(f"{source}: labels not in the vocabulary: {', '.join(sorted(unknown)[:5])}")
    return refs


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


# --- metrics on arrays -------------------------------------------------------------------------------

def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


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


def average_precisions(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP per class from the scores; NaN for classes without positives."""
    out = np.full(truth.shape[1], np.nan)
    for c in range(truth.shape[1]):
        if truth[:, c].any():
            out[c] = average_precision_score(truth[:, c], scores[:, c])
    return out


def threshold_sweep(truth: np.ndarray, scores: np.ndarray, grid: tuple[float, ...] = SWEEP) -> list[dict[str, float]]:
    """One global threshold at a time: OP/OR/OF1 and CP/CR/CF1 of `score >= t`."""
    rows = []
    for t in grid:
        m = label_metrics(truth, scores >= t)
        rows.append({"threshold": t, **{k: round(m[k], 4) for k in ("OP", "OR", "OF1", "CP", "CR", "CF1")}})
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


# --- the evaluation ----------------------------------------------------------------------------------

def evaluate(out_dir: str | Path, reference: str | Path | None = None,
             thresholds: float | dict[str, float] | str | Path | None = None) -> dict[str, Any]:
    """Compare a build's machine labels with human labels; everything the report shows, as a dict.

    `reference`: None (the records' own `reference` labels) or another source matched by key.
    `thresholds`: None to score the records' final labels as built; a number, a mapping or a
    thresholds YAML to re-threshold the stored scores instead (no engine needed).
    """
    out = layout.require_output(Path(out_dir))
    vocab, recipe = output_vocabulary(out)
    names = vocab.names
    default_t = float((recipe.get("tagging") or {}).get("threshold", 0.5))
    records = list(layout.iter_records(out))
    if reference is None:
        refs = {r.key: r.reference for r in records if r.reference is not None}
        if not refs:
            raise UserError(f"{out}: no record carries human labels; give --reference SOURCE")
    else:
        refs = load_reference(reference, vocab)
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
    result.update({
        "output": str(out),
        "reference": str(reference) if reference is not None else "records",
        "simulated": simulated,
        "notice": SIMULATED_NOTICE if simulated else None,
        "counts": counts,
        "thresholds_used": ("labels as built" if per_label_t is None else
                            per_label_t[names[0]] if len(set(per_label_t.values())) == 1 else "per label"),
    })
    if has_scores:
        result.update(_tuning(truth, scores, names, result))
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
    m = label_metrics(truth, pred)
    ap = average_precisions(truth, scores) if has_scores else np.full(len(names), np.nan)
    has_pos = truth.any(0)
    overall = {k: round(m[k], 4) for k in ("OP", "OR", "OF1", "CP", "CR", "CF1")}
    overall["mAP"] = _round(np.nanmean(ap)) if has_scores and has_pos.any() else None
    overall["classes_evaluated"] = int(has_pos.sum())
    overall["classes_without_positives"] = int((~has_pos).sum())
    tp = (truth & pred).sum(0)
    per_class = []
    for c, name in enumerate(names):
        per_class.append({
            "label": name, "group": vocab.group_of(name),
            "human": int(truth[:, c].sum()), "machine": int(pred[:, c].sum()),
            "tp": int(tp[c]), "fp": int(pred[:, c].sum() - tp[c]), "fn": int(truth[:, c].sum() - tp[c]),
            "precision": _round(m["precision"][c]), "recall": _round(m["recall"][c]), "f1": _round(m["f1"][c]),
            "ap": None if np.isnan(ap[c]) else _round(ap[c]),
        })
    order = sorted(range(len(names)), key=lambda c: -truth[:, c].sum())
    curves = {names[c]: pr_curve(truth[:, c], scores[:, c]) for c in order[:CURVE_CLASSES]
              if has_scores and truth[:, c].any()}
    t_int, p_int = truth.astype(int), pred.astype(int)
    return {
        "images": int(truth.shape[0]),
        "labels": names,
        "overall": overall,
        "classes_without_positives": [n for c, n in enumerate(names) if not has_pos[c]],
        "per_class": per_class,
        "curves": curves,
        "cooccurrence": {"human": (t_int.T @ t_int).tolist(), "machine": (p_int.T @ p_int).tolist()},
        "has_scores": has_scores,
    }


def _tuning(truth: np.ndarray, scores: np.ndarray, names: list[str], result: dict[str, Any]) -> dict[str, Any]:
    sweep = threshold_sweep(truth, scores)
    best = max(sweep, key=lambda row: (row["OF1"], -abs(row["threshold"] - 0.5)))
    tuned = tune_thresholds(truth, scores, names, best["threshold"])
    m = label_metrics(truth, apply_thresholds(scores, names, tuned))
    for c, row in enumerate(result["per_class"]):
        row["threshold_tuned"] = tuned[names[c]]
        row["f1_tuned"] = _round(m["f1"][c])
    return {
        "sweep": sweep,
        "best_global": {"threshold": best["threshold"], "OF1": best["OF1"], "CF1": best["CF1"]},
        "tuned": {
            "thresholds": tuned,
            "global": best["threshold"],
            **{k: round(m[k], 4) for k in ("OP", "OR", "OF1", "CP", "CR", "CF1")},
            "note": "tuned and measured on the same images (in-sample): expect less on new data",
        },
    }


# --- outputs -----------------------------------------------------------------------------------------

def write_thresholds(result: dict[str, Any], path: str | Path) -> Path:
    """The tuned per-label thresholds as YAML that `tagging.thresholds_file` accepts."""
    if "tuned" not in result:
        raise UserError("no scores in these records: nothing to tune thresholds on")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"# per-label thresholds tuned by `tagllm eval --tune` on {result['images']} images of",
              f"# {result['output']} against {_reference_text(result)};",
              f"# classes without positives keep the best global threshold {result['tuned']['global']}."]
    if result["simulated"]:
        header.append("# SIMULATED: tuned on labels from the simulated engine — for pipeline tests only.")
    body = {"thresholds": result["tuned"]["thresholds"]}
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def _reference_text(result: dict[str, Any]) -> str:
    ref = result["reference"]
    return "the human labels carried in the records" if ref == "records" else f"the human labels of {ref}"


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def render_markdown(result: dict[str, Any], plots: list[str] | None = None) -> str:
    o = result["overall"]
    c = result["counts"]
    excluded = f"{c['failed']} failed records, {c['no_reference']} without human labels"
    if c["reference_not_in_output"]:
        excluded += f"; {c['reference_not_in_output']} reference images not in the output"
    skipped = result["classes_without_positives"]
    skipped_text = f" ({', '.join(skipped[:10])}{', ...' if len(skipped) > 10 else ''})" if skipped else ""
    lines = ["# Label evaluation", ""]
    if result["simulated"]:
        lines += [f"> **SIMULATED.** {SIMULATED_NOTICE}", ""]
    lines += [
        f"Output: `{result['output']}`  ",
        f"Compared with: {_reference_text(result)}  ",
        f"Thresholds: {result['thresholds_used']}", "",
        f"{result['images']} images evaluated; excluded: {excluded}.", "",
        "| OP | OR | OF1 | CP | CR | CF1 | mAP |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        "| " + " | ".join(_fmt(o[k]) for k in ("OP", "OR", "OF1", "CP", "CR", "CF1", "mAP")) + " |", "",
        f"CP/CR/mAP over the {o['classes_evaluated']} classes with human positives; "
        f"{o['classes_without_positives']} classes without positives skipped{skipped_text}.",
        "",
    ]
    if not result["has_scores"]:
        lines += ["No stage-2 scores in these records: no mAP and no threshold tuning.", ""]
    if "sweep" in result:
        b, t = result["best_global"], result["tuned"]
        lines += ["## Thresholds", "",
                  f"Best global threshold {b['threshold']}: OF1 {b['OF1']:.3f}, CF1 {b['CF1']:.3f}. "
                  f"Per-label tuned thresholds: OF1 {t['OF1']:.3f}, CF1 {t['CF1']:.3f} ({t['note']}).", "",
                  "| threshold | OP | OR | OF1 | CP | CR | CF1 |", "|---:|---:|---:|---:|---:|---:|---:|"]
        lines += ["| " + " | ".join(_fmt(row[k]) for k in ("threshold", "OP", "OR", "OF1", "CP", "CR", "CF1")) + " |"
                  for row in result["sweep"]]
        lines.append("")
    lines += ["## Per class", "",
              "| label | group | human | machine | P | R | F1 | AP | tuned t | F1 tuned |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["per_class"]:
        lines.append("| " + " | ".join(_fmt(row.get(k)) for k in (
            "label", "group", "human", "machine", "precision", "recall", "f1", "ap", "threshold_tuned", "f1_tuned"
        )) + " |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], folder: str | Path, plots: bool = True) -> dict[str, Path]:
    """report.json, report.md and the PNG plots in `folder`; returns what was written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if plots:
        from builder.analysis.plots import eval_plots

        written.update(eval_plots(result, folder))
    written["json"] = folder / "report.json"
    written["json"].write_text(json.dumps(result, indent=1), encoding="utf-8")
    written["markdown"] = folder / "report.md"
    pngs = [str(p) for k, p in written.items() if str(p).endswith(".png")]
    written["markdown"].write_text(render_markdown(result, pngs), encoding="utf-8")
    return written


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The short form a dataset card or stats.json shows."""
    return {"images": result["images"], "reference": result["reference"], "simulated": result["simulated"],
            **result["overall"], **({"tuned_OF1": result["tuned"]["OF1"]} if "tuned" in result else {})}


def run_eval(out_dir: str | Path, reference: str | Path | None = None,
             thresholds: float | dict[str, float] | str | Path | None = None, tune: bool = False,
             report_dir: str | Path | None = None, plots: bool = True) -> dict[str, Any]:
    """`tagllm eval`: evaluate, write the report (default OUT/eval), and with `tune` the thresholds file.

    The result gains `written`: paths of the files (thresholds file at report_dir/thresholds.yaml).
    """
    result = evaluate(out_dir, reference, thresholds)
    folder = Path(report_dir) if report_dir else Path(out_dir) / "eval"
    written = write_report(result, folder, plots=plots)
    if tune:
        written["thresholds"] = write_thresholds(result, folder / "thresholds.yaml")
    result["written"] = {k: str(v) for k, v in written.items()}
    return result
