"""The gallery's views: each filter value is a list of entries, sorted once and cut into pages.

A browser never filters a whole build: the first active filter picks its view (a label, near the
threshold, disagreement, issues, a failure reason), whose pages hold the entries themselves, and
the other filters narrow those pages as they load. So a million images open as fast as a hundred:
the first screen is one small metadata file and one page. Each entry's JSON is encoded once; a
view keeps (sort key, entry number) pairs, sorted with numpy at the end.
"""

from __future__ import annotations

import json
import re
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from builder.publish.gallery.entries import NEAR, disagreements, involved_labels, is_near, label_score

PAGE = 100  # entries per page file
LABELED, REJECTED, HUMAN, FALSE_POS, MISSED = 1, 2, 4, 8, 16  # a label's role in an entry (bits)


def label_id(index: int, name: str) -> str:
    """A file-safe, collision-free id for a label: its vocabulary position and a readable slug."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "label"
    return f"{index:03d}-{slug}"


def view_titles(label_names: list[str]) -> dict[str, str]:
    titles = {"all": "all images, in source order",
              "near": f"a score within {NEAR} of its threshold (closest first)",
              "disagree": "machine and human labels differ (most differences first)",
              "false_pos": "a machine label the human labels lack", "missed": "a human label the machine missed",
              "issues": "ranked label issues (most suspect first)", "reviewed": "reviewed by a person",
              "sent": "sent for review, not imported yet", "failed": "failed items"}
    for i, name in enumerate(label_names):
        titles[f"label-{label_id(i, name)}"] = f"{name}: machine label, rejected candidate or human label " \
                                             "(highest score first)"
    return titles


@dataclass
class ViewBook:
    """Every entry's JSON text, once, and the membership of each view."""

    label_names: list[str]
    thresholds: dict[str, float]
    default_threshold: float
    page: int = PAGE
    texts: list[str] = field(default_factory=list)
    keys: dict[str, tuple[array, array]] = field(default_factory=dict)
    roles: dict[str, array] = field(default_factory=dict)  # label views: ROLE bits per member
    ok: array = field(default_factory=lambda: array("q"))  # entry numbers of the ok records
    counts: dict[str, Any] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        self._ids = {name: label_id(i, name) for i, name in enumerate(self.label_names)}

    def _put(self, view: str, sort_key: float, n: int) -> None:
        if view not in self.keys:
            self.keys[view] = (array("d"), array("q"))
        keys, ns = self.keys[view]
        keys.append(sort_key)
        ns.append(n)

    def add(self, entry: dict[str, Any]) -> None:
        n = len(self.texts)
        entry["n"] = n
        self.texts.append(json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
        self._put("all", n, n)
        if entry["status"] != "ok":
            self._put("failed", n, n)
            self._put(f"failed-{entry['error']}", n, n)
            self.counts["failed"] += 1
            return
        self.ok.append(n)
        for name in involved_labels(entry):
            if name in self._ids:
                view = f"label-{self._ids[name]}"
                self._put(view, -label_score(entry, name), n)
                self.roles.setdefault(view, array("b")).append(_role(entry, name))
        for name in entry.get("labels") or ():
            self.counts[f"machine:{name}"] += 1
        if entry.get("human") is not None:
            self.counts["with_human"] += 1
        for name in entry.get("human") or ():
            self.counts[f"human:{name}"] += 1
        gap = is_near(entry, self.thresholds, self.default_threshold)
        if gap is not None:
            self._put("near", gap, n)
        if diff := disagreements(entry):
            self._put("disagree", -diff, n)
        if entry.get("false_pos"):
            self._put("false_pos", n, n)
        if entry.get("missed"):
            self._put("missed", n, n)
        if issue := entry.get("issue"):
            self._put("issues", -issue["score"], n)
        if review := entry.get("review"):
            self._put("reviewed" if review["status"] == "reviewed" else "sent", n, n)

    def _sorted(self, view: str) -> np.ndarray:
        keys, ns = self.keys[view]
        k = np.frombuffer(keys, dtype=np.float64)
        m = np.frombuffer(ns, dtype=np.int64)
        return np.lexsort((m, k))

    def order(self, view: str) -> np.ndarray:
        """Entry numbers of a view, sorted by its key, ties in source order."""
        return np.frombuffer(self.keys[view][1], dtype=np.int64)[self._sorted(view)]

    def with_role(self, name: str, role: int) -> np.ndarray:
        """Entry numbers of a label's view whose role has the `role` bit, highest score first."""
        view = self.label_view(name)
        if view not in self.keys:
            return np.zeros(0, dtype=np.int64)
        idx = self._sorted(view)
        roles = np.frombuffer(self.roles[view], dtype=np.int8)[idx]
        return np.frombuffer(self.keys[view][1], dtype=np.int64)[idx][(roles & role) > 0]

    def parsed(self, numbers: np.ndarray) -> list[dict[str, Any]]:
        return [json.loads(self.texts[int(i)]) for i in numbers]

    def pages(self, view: str) -> list[str]:
        """The view's pages as JSON array texts, `page` entries each."""
        order, size = self.order(view), self.page
        return ["[" + ",".join(self.texts[int(i)] for i in order[s:s + size]) + "]"
                for s in range(0, len(order), size)]

    def label_view(self, name: str) -> str:
        return f"label-{self._ids[name]}"


def _role(entry: dict[str, Any], name: str) -> int:
    role = 0
    for bit, part in ((LABELED, "labels"), (REJECTED, "rejected"), (HUMAN, "human"), (FALSE_POS, "false_pos"),
                      (MISSED, "missed")):
        if name in (entry.get(part) or ()):
            role |= bit
    return role
