"""A vocabulary from a class hierarchy (Open Images' `bbox_labels_600_hierarchy.json`).

Stage 1 asks one question per group, so groups should be semantic and not too large. The hierarchy
gives both: a top-level branch small enough becomes one group named after its root class; a larger
one keeps its root and direct leaves as a group and splits its sub-branches the same way. Top-level
leaves without a branch are gathered in `other` groups. A class listed under several parents joins
the group of its first appearance (depth-first, file order). Names are the dataset's display names;
descriptions and synonyms are left for the concept sheet or a person to write.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

from builder.errors import UserError
from builder.recipe.vocab import Vocabulary

CHILD_KEYS = ("Subcategory", "Part")


def read_class_descriptions(path: Path) -> dict[str, str]:
    """MID -> display name from an Open Images class descriptions CSV (with or without a header row)."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with path.open(encoding="utf-8", newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and not rows[0][0].startswith(("/m/", "/g/")):
        rows = rows[1:]  # header: LabelName,DisplayName
    out: dict[str, str] = {}
    for n, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[1].strip():
            raise UserError(f"{path}: row {n}: expected LabelName,DisplayName")
        out[row[0].strip()] = row[1].strip()
    if len(set(out.values())) != len(out):
        raise UserError(f"{path}: display names are not unique")
    return out


def _children(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for key in CHILD_KEYS for c in node.get(key, [])]


def _subtree(node: dict[str, Any], out: list[str]) -> list[str]:
    out.append(node["LabelName"])
    for child in _children(node):
        _subtree(child, out)
    return out


class _Grouper:
    def __init__(self, names: dict[str, str], max_group: int, min_group: int):
        self.names = names
        self.max_group = max_group
        self.min_group = min_group
        self.loose: list[str] = []
        self.taken: set[str] = set()
        self.groups: list[tuple[str, list[str]]] = []

    def fresh(self, mids: list[str]) -> list[str]:
        out = []
        for mid in mids:
            if mid in self.names and mid not in self.taken and mid not in out:
                out.append(mid)
        return out

    def add(self, title: str, mids: list[str]) -> None:
        mids = self.fresh(mids)
        if mids:
            self.taken.update(mids)
            self.groups.append((title, mids))

    def set_aside(self, mids: list[str]) -> None:
        """Classes for the `other` groups (claimed now, so later parents do not take them)."""
        mids = self.fresh(mids)
        self.taken.update(mids)
        self.loose.extend(mids)

    def branch(self, node: dict[str, Any]) -> None:
        members = self.fresh(_subtree(node, []))
        title = self.names.get(node["LabelName"], node["LabelName"])
        if len(members) < self.min_group:
            self.set_aside(members)
            return
        if len(members) <= self.max_group:
            self.add(title, members)
            return
        head = self.fresh([node["LabelName"]] + [c["LabelName"] for c in _children(node) if not _children(c)])
        if len(head) < self.min_group:
            self.set_aside(head)
        else:
            self.add(title, head)
        for child in _children(node):
            if _children(child):
                self.branch(child)


def vocabulary_from_hierarchy(names: dict[str, str], tree: dict[str, Any], max_group: int = 60,
                              min_group: int = 6, name: str = "openimages", version: str = "1") -> Vocabulary:
    """Groups from the hierarchy's branches; `names` (MID -> display name) decides which classes are in.

    Branches under `min_group` classes join the `other` groups (fewer stage-1 questions per image).
    """
    g = _Grouper(names, max_group, min_group)
    for child in _children(tree):
        if _children(child):
            g.branch(child)
        else:
            g.set_aside([child["LabelName"]])
    loose = g.loose + [m for m in names if m not in g.taken]
    for start in range(0, len(loose), max_group):
        title = f"other {start // max_group + 1}"
        g.groups.append((title, loose[start:start + max_group]))
    groups = [{"name": title, "labels": [{"name": names[m]} for m in mids]} for title, mids in g.groups]
    return Vocabulary.model_validate({"name": name, "version": version, "groups": groups})


def load_hierarchy(path: Path) -> dict[str, Any]:
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable hierarchy JSON ({exc})") from exc
    if not isinstance(tree, dict) or "LabelName" not in tree:
        raise UserError(f"{path}: no top-level LabelName (not an Open Images hierarchy file)")
    return tree


def write_vocabulary(vocab: Vocabulary, path: Path, comment: str = "") -> Path:
    """The vocabulary as a YAML file (empty descriptions and synonyms left out), with a leading comment."""
    data = vocab.model_dump()
    for group in data["groups"]:
        group["labels"] = [{k: v for k, v in label.items() if v} for label in group["labels"]]
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110), encoding="utf-8")
    return path
