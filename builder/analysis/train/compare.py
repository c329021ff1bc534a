"""machine- vs human-label training side by side: mAP ratio and gap closed, only from comparable runs.

Runs compare when they share the test images, the vocabulary, the settings of `COMPARABLE`
(architecture, epochs, optimizer) and the seeds, the human arm trained on reference labels and the
other arms on machine labels, and all trained on the same images. Otherwise `compare_training`
refuses; `force` overrides and the result lists what was forced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from builder.analysis.train.config import COMPARABLE
from builder.errors import UserError

Runs = str | Path | list[str | Path]


def _load_runs(runs: Runs) -> list[dict[str, Any]]:
    items = runs if isinstance(runs, list) else [runs]
    out = []
    for r in items:
        p = Path(r)
        p = p / "train.json" if p.is_dir() else p
        if not p.is_file():
            raise UserError(f"{r}: no train.json (run `tagllm train` first)")
        out.append({**json.loads(p.read_text(encoding="utf-8")), "_path": str(r)})
    return out


def _arm(runs: list[dict[str, Any]]) -> dict[str, Any]:
    values = [r["mAP"] for r in runs]
    if any(v is None for v in values):
        raise UserError("a run has no test mAP (no class with positives in its test split)")
    return {"mAP": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4), "runs": len(values),
            "values": values, "labels": sorted({r["labels"] for r in runs}),
            "simulated": any(r.get("simulated") for r in runs)}


def problems(arms: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Why these runs cannot be compared (empty when they can)."""
    runs = [r for rs in arms.values() for r in rs]
    found = []
    if len({tuple(r["vocabulary"]) for r in runs}) > 1:
        found.append("the runs use different vocabularies")
    tests = {r.get("test_digest") or r["test"] for r in runs}
    if len(tests) > 1:
        found.append("the runs were tested on different splits: " + ", ".join(sorted({r["test"] for r in runs})))
    for key in COMPARABLE:
        values = {json.dumps((r.get("settings") or {}).get(key)) for r in runs}
        if len(values) > 1:
            found.append(f"the runs differ in {key}: {', '.join(sorted(values))}")
    seeds = {name: sorted({(r.get("settings") or {}).get("seed", 0) for r in rs}) for name, rs in arms.items()}
    if len({tuple(s) for s in seeds.values()}) > 1:
        found.append("the arms use different seeds: " + "; ".join(f"{k} {v}" for k, v in seeds.items()))
    for name, rs in arms.items():
        want = "reference" if name == "human" else "machine"
        wrong = [r["_path"] for r in rs if r["labels"] != want]
        if wrong:
            found.append(f"the {name} arm must be trained on {want} labels: {', '.join(wrong)}")
    images = {r["train_digest"] for r in runs if r.get("train_digest")}
    if len(images) > 1:
        found.append("the runs were trained on different images")
    return found


def compare_training(machine_run: Runs, human_run: Runs, baseline_run: Runs | None = None,
                     force: bool = False) -> dict[str, Any]:
    """mAP ratio machine/human and, with a baseline, gap closed = (m - b) / (h - b) (DESIGN.md).

    Each argument is a run folder or train.json, or a list of them (seeds): means are compared.
    Gap closed is reported only when the baseline is below the human arm.
    """
    arms = {"machine": _load_runs(machine_run), "human": _load_runs(human_run)}
    if baseline_run is not None:
        arms["baseline"] = _load_runs(baseline_run)
    wrong = problems(arms)
    if wrong and not force:
        raise UserError("runs not comparable: " + "; ".join(wrong) + " (--force to compare anyway)")
    summary = {name: _arm(runs) for name, runs in arms.items()}
    m, h = summary["machine"]["mAP"], summary["human"]["mAP"]
    result: dict[str, Any] = {**summary, "test": arms["machine"][0]["test"],
                              "mAP_ratio": round(m / h, 4) if h else None}
    if "baseline" in summary:
        b = summary["baseline"]["mAP"]
        result["gap_closed"] = round((m - b) / (h - b), 4) if b < h else None
        if b >= h:
            result["gap_closed_note"] = f"not defined: the baseline mAP {b} is not below the human mAP {h}"
    if wrong:
        result["forced"] = wrong
        result["warning"] = "FORCED comparison of runs that are not comparable; the figures may mean nothing"
    if any(s["simulated"] for s in summary.values()):
        result["notice"] = ("machine labels from the simulated engine — this compares label noise levels, "
                            "not a model's quality")
    return result
