"""Failed records grouped by reason and by what went wrong, each with a count and one example.

The stats only count reasons ('source 3'); a user needs to know *what* to fix, e.g. which labels
of the metadata are not in the vocabulary. Details are grouped by their wording with the
specifics (quoted names, file names, numbers) masked.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from builder.publish import layout

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_PATHLIKE = re.compile(r"[^\s:]*[/\\][^\s:]*|[^\s:]+\.[A-Za-z0-9]{2,5}\b")
_NUMBER = re.compile(r"\b\d+\b")
_LABEL = re.compile(r"label '([^']*)' is not in the vocabulary")


def pattern(detail: str) -> str:
    """The wording of a detail without its specifics: same problem, same pattern."""
    text = _QUOTED.sub("'…'", detail or "")
    text = _PATHLIKE.sub("…", text)
    text = re.sub(r"^(…:\s*)+", "", _NUMBER.sub("N", text).strip())
    return text or "(no detail)"


def failure_summary(out: Path) -> list[dict[str, Any]]:
    """[{reason, pattern, count, example_key, example}] over all finished shards, most frequent first."""
    counts: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], tuple[str, str]] = {}
    missing_labels: Counter[str] = Counter()
    for shard in layout.completed_shards(out):
        path = layout.index_path(out, shard)
        if not path.is_file():
            continue
        table = pq.read_table(path, columns=["key", "status", "error", "detail"])
        for row in table.to_pylist():
            if row["status"] == "ok":
                continue
            group = (row["error"] or "unknown", pattern(row["detail"] or ""))
            counts[group] += 1
            examples.setdefault(group, (row["key"], row["detail"] or ""))
            missing_labels.update(_LABEL.findall(row["detail"] or ""))
    rows = [{"reason": r, "pattern": p, "count": n, "example_key": examples[(r, p)][0],
             "example": examples[(r, p)][1]} for (r, p), n in counts.most_common()]
    if missing_labels:
        rows.append({"reason": "source", "pattern": "labels not in the vocabulary",
                     "count": sum(missing_labels.values()), "example_key": "",
                     "example": ", ".join(f"{k} ({v})" for k, v in missing_labels.most_common(10))})
    return rows


def failure_lines(out: Path, limit: int = 6) -> list[str]:
    """Human-readable lines for the build summary and `tagllm inspect`."""
    lines = []
    for row in failure_summary(out)[:limit]:
        if row["example_key"]:
            lines.append(f"  {row['reason']} {row['count']}, e.g. {row['example_key']}: {row['example'][:200]}")
        else:
            lines.append(f"  {row['reason']}: {row['pattern']}: {row['example']}")
    return lines
