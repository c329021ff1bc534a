"""`tagllm issues`: the ranked table (parquet + CSV) and a short Markdown report under OUT/issues/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from builder.analysis import label_issues as li
from builder.errors import UserError
from builder.publish.corrections import ISSUES_DIR

SUSPECTS = 5  # labels listed per image
SHOWN = 15  # images per kind in the Markdown report
SUSPECT_MIN = 0.1  # a label is listed as suspect above this suspicion


def _why(ev: li.Evidence, kind: str, i: int, k: int, given: bool, p: float) -> str:
    """Why label k of image i is suspect, in words."""
    score, t = ev.scores[i, k], ev.thresholds[k]
    parts = []
    if kind == "reference":
        model = "not proposed in stage 1" if np.isnan(score) else f"model score {score:.2f}"
        parts.append(f"human says {'yes' if given else 'no'}, {model}")
    elif np.isnan(score):
        parts.append("not proposed in stage 1")
    elif score < t:
        parts.append(f"candidate rejected by stage 2 ({score:.2f} < {t:.2f})")
    if kind == "machine" and not np.isnan(score) and abs(score - t) < li.NEAR:
        parts.append(f"near threshold ({score:.2f} vs {t:.2f})")
    if kind == "machine" and ev.ensemble is not None and 0 < np.nan_to_num(ev.ensemble[i, k], nan=0) < 1:
        parts.append(f"ensemble split ({ev.ensemble[i, k]:.0%} of variants)")
    if kind == "machine" and ev.others:
        n = sum(1 for labels, _ in ev.others if not np.isnan(labels[i, k]) and bool(labels[i, k]) != given)
        if n:
            parts.append(f"{n} of {len(ev.others)} other builds disagree")
    if kind == "machine" and ev.reference is not None and ev.has_reference[i] and ev.reference[i, k] != given:
        parts.append("human label differs")
    return "; ".join(parts) or f"score {p:.2f}"


def table_rows(ev: li.Evidence, ranked: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per image, most suspect first."""
    kind, rows = ranked["kind"], ranked["rows"]
    order = np.argsort(-ranked["score"], kind="stable")
    flags = ranked["flags"]
    out = []
    for rank_no, j in enumerate(order, 1):
        i = int(rows[j])
        top = np.argsort(-ranked["suspicion"][j], kind="stable")[:SUSPECTS]
        suspects = [{"label": ev.names[k], "given": bool(ranked["given"][j, k]),
                     "p": round(float(ranked["probs"][j, k]), 4),
                     "suspicion": round(float(ranked["suspicion"][j, k]), 4),
                     "why": _why(ev, kind, i, k, bool(ranked["given"][j, k]), float(ranked["probs"][j, k]))}
                    for k in top if ranked["suspicion"][j, k] >= SUSPECT_MIN]
        out.append({
            "kind": kind, "rank": rank_no, "key": ev.keys[i], "issue_score": round(float(ranked["score"][j]), 4),
            "cleanlab_flagged": None if flags is None else bool(flags[j]),
            "top_label": suspects[0]["label"] if suspects else None,
            "suspects": json.dumps(suspects, separators=(",", ":")),
            "labels": json.dumps([ev.names[k] for k in np.flatnonzero(ev.machine[i])]),
            "reference": json.dumps([ev.names[k] for k in np.flatnonzero(ev.reference[i])])
            if ev.reference is not None and ev.has_reference[i] else None,
        })
    return out


def find_issues(out: str | Path, reference: str | Path | None = None, others: tuple[Path, ...] = (),
                kinds: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Rank every kind of labels present; returns the rows and a summary."""
    ev = li.gather(Path(out), reference, tuple(others))
    if kinds is None:
        kinds = li.KINDS if ev.reference is not None else ("machine",)
    rows: list[dict[str, Any]] = []
    # "output" is the folder's name only: issues/ is published with the dataset, local paths are not
    summary: dict[str, Any] = {"output": Path(out).name, "images": len(ev.keys), "already_reviewed": ev.reviewed,
                               "simulated": ev.simulated, "ensemble": ev.ensemble is not None,
                               "other_builds": len(others), "kinds": {}}
    for kind in kinds:
        ranked = li.rank(ev, kind)
        kind_rows = table_rows(ev, ranked)
        flags = ranked["flags"]
        summary["kinds"][kind] = {"images": len(kind_rows),
                                  "cleanlab_flagged": None if flags is None else int(flags.sum()),
                                  "score_over_half": int((ranked["score"] > 0.5).sum())}
        rows += kind_rows
    return {"rows": rows, "summary": summary, "evidence": ev}


def _markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = ["# Label issues", ""]
    if s["simulated"]:
        lines += ["> **SIMULATED.** The labels come from the simulated engine (human labels + seeded noise); "
                  "this ranking exercises the tooling and says nothing about a model.", ""]
    signals = ["stage-2 scores as predicted probabilities (cleanlab multi-label self-confidence and "
               "confident-learning flags)", "scores near the threshold", "candidates rejected by stage 2"]
    if s["ensemble"]:
        signals.append("stage-1 ensemble variants that split")
    if s["other_builds"]:
        signals.append(f"{s['other_builds']} other build(s) that disagree")
    lines += [f"{s['images']} images ranked ({s['already_reviewed']} already reviewed, left out). "
              f"Signals: {', '.join(signals)}.", "",
              "Full table: `issues.parquet` / `issues.csv`. Send the top images to a person: "
              "`tagllm review export OUT --to label-studio --select issues --budget N`.", ""]
    for kind, info in s["kinds"].items():
        title = "Machine labels" if kind == "machine" else "Human reference labels"
        flagged = "n/a" if info["cleanlab_flagged"] is None else info["cleanlab_flagged"]
        lines += [f"## {title}", "", f"{info['images']} images; cleanlab flags {flagged}; "
                  f"{info['score_over_half']} have an issue score above 0.5.", "",
                  "| rank | key | score | suspect labels |", "|---:|---|---:|---|"]
        for row in [r for r in result["rows"] if r["kind"] == kind][:SHOWN]:
            suspects = json.loads(row["suspects"])[:2]
            text = "; ".join(f"{x['label']} ({x['why']})" for x in suspects)
            lines.append(f"| {row['rank']} | `{row['key']}` | {row['issue_score']:.3f} | {text} |")
        lines.append("")
    return "\n".join(lines)


def write_issues(result: dict[str, Any], folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    if not result["rows"]:
        raise UserError("nothing to write: no image was ranked")
    table = pa.Table.from_pylist(result["rows"])
    written = {"parquet": folder / "issues.parquet", "csv": folder / "issues.csv",
               "json": folder / "summary.json", "markdown": folder / "report.md"}
    pq.write_table(table, written["parquet"])
    pacsv.write_csv(table, written["csv"])
    written["json"].write_text(json.dumps(result["summary"], indent=1), encoding="utf-8")
    written["markdown"].write_text(_markdown(result), encoding="utf-8")
    return {k: str(v) for k, v in written.items()}


def run_issues(out: str | Path, reference: str | Path | None = None, others: tuple[Path, ...] = (),
               folder: str | Path | None = None) -> dict[str, Any]:
    """`tagllm issues`: rank, write OUT/issues/ (or `folder`), return the result with `written`."""
    result = find_issues(out, reference, others)
    result["written"] = write_issues(result, Path(folder) if folder else Path(out) / ISSUES_DIR)
    return result


def read_table(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / ISSUES_DIR / "issues.parquet"
    if not path.is_file():
        raise UserError(f"{out}: no {ISSUES_DIR}/issues.parquet; run `tagllm issues {out}` first")
    return pq.read_table(path).to_pylist()


