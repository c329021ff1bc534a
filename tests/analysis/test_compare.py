"""`compare`: one table over builds of the same recipe with different strategies."""

from __future__ import annotations

import json

import pytest

from builder.analysis.compare import compare, to_json, to_markdown, to_rich
from builder.analysis.evaluate import evaluate
from builder.errors import UserError
from builder.publish import layout

STRATEGIES = ("tagllm", "yes-no", "all-in-one", "open-ended")


@pytest.fixture
def runs(build, write_recipe, tmp_path):
    outs = []
    for strategy in STRATEGIES:
        recipe = write_recipe(f"{strategy}.yaml", tagging={"strategy": strategy},
                              output={"dir": str(tmp_path / strategy), "samples_per_shard": 5})
        outs.append(build(recipe).out)
    return outs


def test_one_row_per_run_with_cost_and_metrics(runs):
    rows = compare(runs)
    assert [r["strategy"] for r in rows] == list(STRATEGIES)
    by = {r["strategy"]: r for r in rows}
    assert by["yes-no"]["requests_per_image"] == 7.0  # one per label of the small vocabulary
    assert by["all-in-one"]["requests_per_image"] == 1.0 == by["open-ended"]["requests_per_image"]
    tagllm_records = list(layout.iter_records(runs[0]))
    expected = sum(3 + len(r.candidates) for r in tagllm_records) / len(tagllm_records)
    assert by["tagllm"]["requests_per_image"] == pytest.approx(expected)
    for row, out in zip(rows, runs, strict=True):
        assert row["images"] == 12 and row["failed"] == 0 and row["simulated"] is True
        assert row["prompt_tokens_per_image"] > 0 and row["completion_tokens_per_image"] > 0
        records = list(layout.iter_records(out))
        engine_seconds = sum(r.usage["engine_seconds"] for r in records) / len(records)
        assert engine_seconds > 0 and row["engine_seconds_per_image"] == pytest.approx(engine_seconds)
        overall = evaluate(out)["overall"]
        assert {k: row[k] for k in ("CP", "CR", "CF1", "OP", "OR", "OF1", "mAP")} == \
            {k: overall[k] for k in ("CP", "CR", "CF1", "OP", "OR", "OF1", "mAP")}
    assert by["yes-no"]["prompt_tokens_per_image"] > by["all-in-one"]["prompt_tokens_per_image"]


def test_candidate_recall_and_size_only_for_tagllm(runs):
    rows = compare(runs)
    records = [r for r in layout.iter_records(runs[0]) if r.reference is not None]
    human = sum(len(r.reference) for r in records)
    inside = sum(len(set(r.reference) & set(r.candidates)) for r in records)
    assert rows[0]["candidate_recall"] == pytest.approx(inside / human)
    assert rows[0]["candidate_size"] == pytest.approx(sum(len(r.candidates) for r in records) / 12)
    assert all(r["candidate_recall"] is None and r["candidate_size"] is None for r in rows[1:])
    assert rows[3]["unmapped_per_image"] is not None and rows[0]["unmapped_per_image"] is None


def test_markdown_json_and_rich(runs):
    rows = compare(runs)
    md = to_markdown(rows)
    lines = md.splitlines()
    assert lines[0].startswith("| run | strategy |") and "CF1" in lines[0] and "cand. recall" in lines[0]
    assert len([line for line in lines if line.startswith("| ")]) == 1 + len(runs)
    assert "| yes-no* | yes-no | 12 | 0 | 7.00 |" in md
    assert "simulated engine" in md
    assert json.loads(to_json(rows)) == json.loads(json.dumps(rows))
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(to_rich(rows))
    text = console.export_text()
    assert "req/img" in text and "open-ended*" in text


def test_runs_without_human_labels_still_compare(build, write_recipe, tmp_path, photo_folder):
    (photo_folder / "metadata.jsonl").unlink()
    out = build(write_recipe(output={"dir": str(tmp_path / "nolabels"), "samples_per_shard": 5},
                             engine={"kind": "simulated", "simulation": {"allow_unlabeled": True}})).out
    (row,) = compare([out])
    assert row["CF1"] is None and row["candidate_recall"] is None and "metrics_note" in row
    assert row["requests_per_image"] > 0
    assert "| - |" in to_markdown([row])


def test_compare_needs_output_folders(tmp_path):
    with pytest.raises(UserError):
        compare([])
    with pytest.raises(UserError, match="not a tagllm output"):
        compare([tmp_path])
