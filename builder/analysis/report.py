"""What `tagllm eval` writes: report.json, report.md (with its conventions), plots, thresholds.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from builder.errors import UserError
from builder.publish.corrections import report_link

SIMULATED_NOTICE = ("Labels from the simulated engine — not a measure of model quality. The simulated engine "
                    "answers from the human labels plus seeded noise; these numbers only test the pipeline.")
CONVENTIONS = ("Failed records and records without human labels are excluded (counted above). A label that "
               "was never a candidate has score 0 and is not kept. CP, CR and mAP average over the classes "
               "with human positives; classes without positives are skipped and listed. OP/OR/OF1 pool every "
               "(image, label) pair.")
BINARY_NOTICE = ("Scores are 0/1 (the engine gave no logprobs): the mAP is the average precision of hard "
                 "labels, not of scores, and is not comparable with a logprob mAP.")
KEYS = ("OP", "OR", "OF1", "CP", "CR", "CF1", "mAP")


def write_thresholds(result: dict[str, Any], path: str | Path) -> Path:
    """The tuned per-label thresholds as YAML that `tagging.thresholds_file` accepts, with the keys of
    the dev images they were chosen on (so a later `eval` can leave those images out)."""
    if "tuned" not in result:
        raise UserError("no scores in these records (or too few images): nothing to tune thresholds on")
    t = result["tuned"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"# per-label thresholds tuned by `tagllm eval --tune` on {t['dev_images']} dev images of",
              f"# {result['output']} against {_reference_text(result)};",
              f"# measured on the {t['held_out_images']} held-out images: OF1 {t['held_out']['OF1']:.3f}, "
              f"CF1 {t['held_out']['CF1']:.3f} (as built: OF1 {t['held_out_as_built']['OF1']:.3f});",
              f"# classes without dev positives keep the best global threshold {t['global']}."]
    if result["simulated"]:
        header.append("# SIMULATED: tuned on labels from the simulated engine — for pipeline tests only.")
    body = {"thresholds": t["thresholds"],
            "tuned_on": {"tool": "tagllm eval --tune", "images": t["dev_images"], "seed": t["seed"],
                         "held_out": {"images": t["held_out_images"], **t["held_out"]},
                         "simulated": result["simulated"], "keys": t["dev_keys"]}}
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


def _row(m: dict[str, Any], label: str = "") -> str:
    return "| " + " | ".join(([label] if label else []) + [_fmt(m.get(k)) for k in KEYS]) + " |"


def warnings(result: dict[str, Any]) -> list[str]:
    """One line per reason to distrust the headline figures (also printed by the CLI)."""
    out = []
    check = result.get("image_check") or {}
    if check.get("key_matches_other_image"):
        out.append(f"{check['key_matches_other_image']} of {check['shared_keys']} keys matched a reference image "
                   f"with different bytes (e.g. {', '.join(check['examples'][:3])}): the reference may be another "
                   "image set")
    tuned = result.get("tuned_on") or {}
    if tuned.get("overlap"):
        others = tuned.get("overall_others")
        tail = (f"; on the other {tuned['others']} images OF1 {others['OF1']:.3f}, CF1 {others['CF1']:.3f}"
                if others else "; no other image to measure on")
        out.append(f"the thresholds in use were tuned on {tuned['overlap']} of these images "
                   f"({', '.join(tuned['by'])}){tail}")
    if result.get("binary_scores"):
        out.append(result["binary_notice"])
    return out


def _tuning_lines(result: dict[str, Any]) -> list[str]:
    if "tuned" not in result:
        return [f"Threshold tuning skipped: {result['tuning_skipped']}.", ""] if "tuning_skipped" in result else []
    b, t = result["best_global"], result["tuned"]
    lines = ["## Thresholds", "",
             f"Chosen on {t['dev_images']} dev images, measured on the other {t['held_out_images']} "
             f"(held out; split seed {t['seed']}). Quote the held-out row.", "",
             "| held-out images | " + " | ".join(KEYS) + " |", "|---|" + "---:|" * len(KEYS),
             _row(t["held_out_as_built"], "as built"),
             _row({"OF1": b["OF1"], "CF1": b["CF1"]}, f"best global threshold {b['threshold']}"),
             _row(t["held_out"], "per-label tuned"),
             _row(t["dev"], "per-label tuned, on the dev images (in-sample)"), "",
             "Sweep of one global threshold over all evaluated images (descriptive):", "",
             "| threshold | OP | OR | OF1 | CP | CR | CF1 |", "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(_fmt(row[k]) for k in ("threshold", "OP", "OR", "OF1", "CP", "CR", "CF1")) + " |"
              for row in result["sweep"]]
    return lines + [""]


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
    lines += [f"> **Warning:** {w}" for w in warnings(result)] + ([""] if warnings(result) else [])
    lines += [
        f"Output: `{result['output']}`  ",
        f"Compared with: {_reference_text(result)}  ",
        f"Thresholds: {result['thresholds_used']}", "",
        f"{result['images']} images evaluated; excluded: {excluded}.", "",
        "| OP | OR | OF1 | CP | CR | CF1 | mAP |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        "| " + " | ".join(_fmt(o[k]) for k in KEYS) + (" (0/1 scores)" if o.get("mAP_from_binary_scores") else "")
        + " |", "",
        f"CP/CR/mAP over the {o['classes_evaluated']} classes with human positives; "
        f"{o['classes_without_positives']} classes without positives skipped{skipped_text}.", "",
        f"Conventions: {result['conventions']}", "",
    ]
    if result.get("verified"):  # partly verified human labels (analysis/verified.py)
        v = result["verified"]
        lines += [f"{v['note']} Known pairs: {v['known_pairs']} of {v['pairs']}; {v['sweep_note']}.", ""]
    if not result["has_scores"]:
        lines += ["No stage-2 scores in these records: no mAP and no threshold tuning.", ""]
    lines += _tuning_lines(result)
    lines += ["## Per class", "",
              "| label | group | human | machine | P | R | F1 | AP | tuned t | F1 tuned (held-out) |",
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
    links = report_link(folder.parent, folder) if (folder.parent / "manifest.json").is_file() else []  # OUT/eval
    written["markdown"].write_text(render_markdown(result, pngs) + "\n".join(["", *links]), encoding="utf-8")
    return written
