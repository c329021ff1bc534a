"""Shared by the review tests: read the labels a build published, in every format, and pick answers."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from builder.publish import layout
from builder.recipe.model import load_recipe


def published(out: Path) -> dict[str, dict[str, Any]]:
    """key -> labels as the HF parquet, the WebDataset json and the index each hold them, and `review`."""
    names = load_recipe(out / layout.RECIPE).vocab.names
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((out / layout.HF_DIR).glob("train-*.parquet")):
        for row in pq.read_table(path, columns=["key", "labels", "review"]).to_pylist():
            found.setdefault(row["key"], {})["hf"] = [names[i] for i in row["labels"]]
            found[row["key"]]["hf_review"] = json.loads(row["review"]) if row["review"] else None
    for path in sorted((out / layout.WDS_DIR).glob("shard-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    data = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    found.setdefault(data["key"], {})["wds"] = data["labels"]
                    found[data["key"]]["wds_review"] = data.get("review")
    for r in layout.iter_records(out):
        if r.status == "ok":
            found.setdefault(r.key, {})["index"] = r.labels
            found[r.key]["review"] = r.review
    return found


def answers_for(tasks: list[dict[str, Any]], names: list[str]) -> dict[str, list[str]]:
    """A reviewer's answers that differ from the machine on every task: toggle one label each."""
    answers = {}
    for i, task in enumerate(tasks):
        result = task["predictions"][0]["result"]
        machine = result[0]["value"]["choices"] if result else []
        flip = names[i % len(names)]
        answers[task["data"]["key"]] = [n for n in names if (n in machine) != (n == flip)]
    return answers


def label_studio_export(tasks: list[dict[str, Any]], answers: dict[str, list[str]]) -> list[dict[str, Any]]:
    """What Label Studio's JSON export holds once each task got one submitted annotation."""
    return [{"id": i + 1, "data": t["data"], "annotations": [{
        "id": i + 1, "completed_by": 1, "was_cancelled": False, "created_at": "2026-12-01T10:00:00Z",
        "updated_at": "2026-12-01T10:00:00Z", "result": [{"from_name": "labels", "to_name": "image",
                                                          "type": "choices",
                                                          "value": {"choices": answers[t["data"]["key"]]}}]}]}
        for i, t in enumerate(tasks) if t["data"]["key"] in answers]


def check_only_reviewed_changed(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
                                answers: dict[str, list[str]]) -> None:
    """Reviewed images carry the answers in every format and keep the machine labels; nothing else moved."""
    assert set(before) == set(after)
    for key, was in before.items():
        now = after[key]
        if key in answers:
            assert now["hf"] == now["wds"] == now["index"] == answers[key], key
            assert now["review"]["machine_labels"] == was["index"], key
            assert now["hf_review"] == now["wds_review"] == now["review"], key
            assert now["review"]["added"] == [n for n in answers[key] if n not in was["index"]]
        else:
            assert now["hf"] == was["hf"] and now["wds"] == was["wds"] and now["index"] == was["index"], key
            assert now["review"] is None and now["hf_review"] is None, key
