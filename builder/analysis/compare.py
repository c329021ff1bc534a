"""Compare several builds (e.g. one recipe under each `--strategy`) in one table.

Per run: requests, tokens and engine seconds per image (from each record's `usage`), the label
metrics against the human labels the records carry (CP/CR/CF1/OP/OR/OF1/mAP, as `tagllm eval`
defines them), and for `tagllm` runs the candidate-set recall (share of human labels inside the
stage-1 candidates) and mean candidate-set size. Per-image figures are over every record of the
run, failed ones included (they cost requests too); metrics are over ok records with human labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.publish import layout

COLUMNS: list[tuple[str, str, str]] = [  # key, header, format
    ("run", "run", "s"),
    ("strategy", "strategy", "s"),
    ("images", "images", "d"),
    ("failed", "failed", "d"),
    ("requests_per_image", "req/img", ".2f"),
    ("prompt_tokens_per_image", "prompt tok/img", ".0f"),
    ("completion_tokens_per_image", "compl. tok/img", ".1f"),
    ("engine_seconds_per_image", "engine s/img", ".4f"),
    ("CP", "CP", ".3f"),
    ("CR", "CR", ".3f"),
    ("CF1", "CF1", ".3f"),
    ("OP", "OP", ".3f"),
    ("OR", "OR", ".3f"),
    ("OF1", "OF1", ".3f"),
    ("mAP", "mAP", ".3f"),
    ("candidate_recall", "cand. recall", ".3f"),
    ("candidate_size", "cand. size", ".2f"),
]
SIMULATED_NOTE = ("Runs marked * used the simulated engine (human labels plus seeded noise): their metrics test "
                  "the pipeline, not a model.")


def run_row(out: str | Path) -> dict[str, Any]:
    """One row of the comparison for one output folder."""
    from builder.analysis.evaluate import evaluate

    out = layout.require_output(Path(out))
    manifest = layout.read_json(out / layout.MANIFEST)
    records = list(layout.iter_records(out))
    n = len(records)
    strategy = manifest.get("strategy", "?")
    engine = manifest.get("engine") or {}

    def per_image(key: str) -> float | None:
        return sum(float(r.usage.get(key, 0)) for r in records) / n if n else None

    row: dict[str, Any] = {
        "run": out.name, "path": str(out), "strategy": strategy,
        "engine": engine.get("engine"), "model": engine.get("model"),
        "simulated": bool(manifest.get("simulated")) or any(r.simulated for r in records),
        "images": n, "failed": sum(r.status != "ok" for r in records),
        "requests_per_image": per_image("requests"),
        "prompt_tokens_per_image": per_image("prompt_tokens"),
        "cached_tokens_per_image": per_image("cached_tokens"),
        "completion_tokens_per_image": per_image("completion_tokens"),
        "engine_seconds_per_image": per_image("engine_seconds"),
        "unmapped_per_image": (sum(len(raw.get("unmapped", ())) for r in records for raw in r.raw) / n
                               if n and strategy == "open-ended" else None),
        "candidate_recall": None, "candidate_size": None,
    }
    for key in ("CP", "CR", "CF1", "OP", "OR", "OF1", "mAP"):
        row[key] = None
    try:
        overall = evaluate(out)["overall"]
    except UserError as exc:
        row["metrics_note"] = str(exc)
    else:
        row.update({k: overall.get(k) for k in ("CP", "CR", "CF1", "OP", "OR", "OF1", "mAP")})
    if strategy == "tagllm":
        judged = [r for r in records if r.status == "ok" and r.reference is not None]
        human = sum(len(r.reference) for r in judged)
        inside = sum(len(set(r.reference) & set(r.candidates)) for r in judged)
        row["candidate_recall"] = inside / human if human else None
        ok = [r for r in records if r.status == "ok"]
        row["candidate_size"] = sum(len(r.candidates) for r in ok) / len(ok) if ok else None
    return row


def compare(runs: list[str | Path]) -> list[dict[str, Any]]:
    """One row per output folder, in the order given."""
    if not runs:
        raise UserError("compare: give at least one output folder")
    return [run_row(r) for r in runs]


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "s":
        return str(value)
    if fmt == "d":
        return str(int(value))
    return format(float(value), fmt)


def _cells(row: dict[str, Any]) -> list[str]:
    cells = [_cell(row.get(key), fmt) for key, _, fmt in COLUMNS]
    if row.get("simulated"):
        cells[0] += "*"
    return cells


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (plus the simulated note when any run was simulated)."""
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|" + "|".join("---" if fmt == "s" else "---:" for _, _, fmt in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    if any(r.get("simulated") for r in rows):
        lines += ["", SIMULATED_NOTE]
    return "\n".join(lines)


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2)


def to_rich(rows: list[dict[str, Any]]) -> Any:
    """The table for a terminal (`rich.table.Table`), turned so each run is a column."""
    from rich.table import Table

    caption = SIMULATED_NOTE if any(r.get("simulated") for r in rows) else None
    table = Table(title="tagllm runs", caption=caption)
    cells = [_cells(row) for row in rows]
    table.add_column(COLUMNS[0][1])
    for c in cells:
        table.add_column(c[0], justify="right")
    for i, (_, header, _) in enumerate(COLUMNS[1:], start=1):
        table.add_row(header, *(c[i] for c in cells))
    return table
