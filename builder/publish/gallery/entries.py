"""One gallery entry per record: what a person looks at beside the thumbnail.

An entry holds the labels with their stage-2 scores, the candidates stage 2 rejected with theirs,
the human labels where the source has them, the false positives and misses against those, the
failure reason, the label-issue rank (`tagllm issues`) and the review status. Disagreement is
measured between the *machine's* labels and the human ones: for a reviewed image, the machine's
labels are those kept in its `review` field, and the reviewed labels are shown beside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from builder.publish.corrections import ISSUES_DIR, REVIEW_DIR
from builder.records import Record

ISSUE_SHOWN = 0.3  # tiles show an issue badge from this issue score on (every image gets a rank)
NEAR = 0.15  # a score within this of its label's threshold is "near the threshold" (as `tagllm issues`)
LABEL_STUDIO_TASKS = f"{REVIEW_DIR}/label-studio/tasks.json"


def read_issue_ranks(out: Path) -> dict[str, dict[str, Any]]:
    """{key: the image's most suspect row of issues/issues.parquet}; empty when never ranked."""
    path = Path(out) / ISSUES_DIR / "issues.parquet"
    if not path.is_file():
        return {}
    cols = ["kind", "rank", "key", "issue_score", "suspects"]
    best: dict[str, dict[str, Any]] = {}
    for row in pq.read_table(path, columns=cols).to_pylist():
        if row["key"] in best and best[row["key"]]["score"] >= row["issue_score"]:
            continue
        suspects = json.loads(row["suspects"] or "[]")[:2]
        best[row["key"]] = {"rank": int(row["rank"]), "score": round(float(row["issue_score"]), 3),
                            "kind": row["kind"], "why": "; ".join(f"{s['label']}: {s['why']}" for s in suspects)}
    return best


def read_sent_for_review(out: Path) -> set[str]:
    """Keys exported to Label Studio (`tagllm review export`), reviewed or not."""
    path = Path(out) / LABEL_STUDIO_TASKS
    if not path.is_file():
        return set()
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return set()
    return {str(t.get("data", {}).get("key")) for t in tasks if isinstance(t, dict)}


def machine_labels(record: Record) -> list[str]:
    """What the model said, also for an image a person corrected since."""
    if record.review and "machine_labels" in record.review:
        return list(record.review["machine_labels"])
    return list(record.labels)


def make_entry(record: Record, shard: int, thumb: str | None, issue: dict[str, Any] | None,
               sent: bool) -> dict[str, Any]:
    """A record's entry; the view book numbers it (`n`, its position in source order)."""
    entry: dict[str, Any] = {"n": -1, "key": record.key, "shard": shard, "status": record.status, "thumb": thumb}
    if record.status != "ok":
        entry.update(error=record.error or "unknown", detail=(record.detail or "")[:300])
        return entry
    said = machine_labels(record)
    scores = record.scores
    entry["size"] = [record.width, record.height] if record.width and record.height else None
    entry["labels"] = {name: _score(scores, name) for name in said}
    entry["rejected"] = {name: _score(scores, name) for name in record.candidates if name not in said}
    if record.reference is not None:
        human = set(record.reference)
        entry["human"] = list(record.reference)
        entry["false_pos"] = [name for name in said if name not in human]
        entry["missed"] = [name for name in record.reference if name not in set(said)]
    if record.review:
        entry["review"] = {"status": "reviewed", "labels": list(record.labels), "by": record.review.get("by", ""),
                           "added": record.review.get("added", []), "removed": record.review.get("removed", [])}
    elif sent:
        entry["review"] = {"status": "sent"}
    if issue:
        entry["issue"] = issue
    return entry


def _score(scores: dict[str, float], name: str) -> float | None:
    value = scores.get(name)
    return None if value is None else round(float(value), 3)


def is_near(entry: dict[str, Any], thresholds: dict[str, float], default: float) -> float | None:
    """The smallest |score - threshold| over the entry's candidates when below NEAR, else None."""
    best = None
    for part in ("labels", "rejected"):
        for name, score in (entry.get(part) or {}).items():
            if score is None:
                continue
            gap = abs(score - thresholds.get(name, default))
            if gap < NEAR and (best is None or gap < best):
                best = gap
    return best


def disagreements(entry: dict[str, Any]) -> int:
    return len(entry.get("false_pos") or ()) + len(entry.get("missed") or ())


def involved_labels(entry: dict[str, Any]) -> set[str]:
    """Every label the entry shows: machine labels, rejected candidates, human labels."""
    names = set(entry.get("labels") or ()) | set(entry.get("rejected") or ()) | set(entry.get("human") or ())
    if entry.get("review"):
        names |= set(entry["review"].get("labels") or ())
    return names


def label_score(entry: dict[str, Any], name: str) -> float:
    """The entry's score for `name` (-1 when stage 2 never scored it), for sorting a label's view."""
    for part in ("labels", "rejected"):
        value = (entry.get(part) or {}).get(name)
        if value is not None:
            return value
    return -1.0
