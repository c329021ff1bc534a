"""Human corrections of labels, kept apart from the engine cache and keyed by image digest.

A reviewer's labels for an image are stored in OUT/review/corrections.jsonl, one JSON line per
reviewed image (later lines win). The build applies them where records are written, so they
survive `relabel`, `retry-failed`, a resumed build and `build --overwrite`: the engine's answers can
change, the reviewed labels stay. A corrected record keeps what the machine said in `review`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.images import image_digest
from builder.records import Record

REVIEW_DIR = "review"
CORRECTIONS = "corrections.jsonl"
ISSUES_DIR = "issues"  # where `tagllm issues` writes its table and report


@dataclass
class Correction:
    """One reviewed image: the labels a person gave it, who and when."""

    digest: str  # sha256 of the original image bytes
    labels: list[str]
    key: str = ""
    by: str = ""
    at: str = ""
    tool: str = ""
    task: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def corrections_path(out: Path) -> Path:
    return Path(out) / REVIEW_DIR / CORRECTIONS


def load_corrections(out: Path) -> dict[str, Correction]:
    """All corrections of an output by digest; a malformed line is an error naming its line."""
    path = corrections_path(out)
    if not path.is_file():
        return {}
    found: dict[str, Correction] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            fix = Correction(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise UserError(f"{path}:{n}: not a correction line ({exc})") from exc
        if not isinstance(fix.labels, list) or not fix.digest:
            raise UserError(f"{path}:{n}: a correction needs 'digest' and a 'labels' list")
        found[fix.digest] = fix
    return found


def save_corrections(out: Path, fixes: Iterable[Correction]) -> Path:
    """Append corrections (a later line for the same digest replaces the earlier one)."""
    path = corrections_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for fix in fixes:
            f.write(json.dumps(fix.to_json(), sort_keys=True) + "\n")
    return path


def read_kept(out: Path) -> bytes | None:
    """The corrections file's bytes, read before `build --overwrite` clears the folder."""
    path = corrections_path(out)
    return path.read_bytes() if path.is_file() else None


def write_kept(out: Path, data: bytes | None) -> None:
    """Put the corrections back after the folder was cleared: human work is never thrown away."""
    if data:
        path = corrections_path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def apply_correction(record: Record, fix: Correction, order: list[str] | None = None) -> Record:
    """The reviewed labels become the record's labels; the machine's labels stay in `review`."""
    machine = list(record.labels)
    labels = [n for n in order if n in set(fix.labels)] if order else list(fix.labels)
    record.labels = labels
    record.review = {
        "machine_labels": machine, "by": fix.by, "at": fix.at, "tool": fix.tool, "task": fix.task,
        "added": [n for n in labels if n not in machine], "removed": [n for n in machine if n not in labels],
    }
    return record


def corrector(out: Path, order: list[str] | None = None) -> Callable[[Record, bytes | None], Record]:
    """What the build calls on every record before writing it; a no-op when nothing was reviewed."""
    fixes = load_corrections(out)

    def fix(record: Record, image: bytes | None) -> Record:
        if not fixes or record.status != "ok" or not image:
            return record
        found = fixes.get(image_digest(image))
        return apply_correction(record, found, order) if found else record

    return fix


def review_summary(stats: dict[str, Any], out: Path) -> dict[str, Any]:
    """What the card says about human review and label issues (empty when there is nothing)."""
    summary: dict[str, Any] = {}
    if stats.get("reviewed"):
        summary.update({k: stats.get(k, 0) for k in ("reviewed", "review_changed", "review_added",
                                                     "review_removed")})
        names = sorted({fix.by or "unnamed" for fix in load_corrections(out).values()})
        summary["reviewers"] = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if (Path(out) / ISSUES_DIR / "report.md").is_file():
        summary["issues_report"] = f"{ISSUES_DIR}/report.md"
    return summary


def report_link(out: str | Path, report_folder: str | Path) -> list[str]:
    """Markdown lines for another report (eval): where the label-issue ranking is, or how to make it."""
    path = Path(out) / ISSUES_DIR / "report.md"
    if not path.is_file():
        return ["Label issues: not ranked yet (`tagllm issues OUT` ranks likely errors for human review).", ""]
    rel = os.path.relpath(path, Path(report_folder))
    return [f"Label issues: [{rel}]({rel}) ranks likely errors for human review.", ""]
