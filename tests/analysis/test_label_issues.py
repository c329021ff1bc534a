"""Label-issue ranking: cleanlab over stage-2 scores plus the builder's own signals."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tinydata import SMALL_VOCAB, jpeg

from builder.dev.synthetic import write_output
from builder.errors import UserError
from builder.recipe.vocab import Vocabulary
from builder.records import Record

pytest.importorskip("cleanlab", reason="tagllm[review] (cleanlab) is not installed")

from builder.analysis import label_issues as li  # noqa: E402
from builder.analysis.issues_report import find_issues, run_issues  # noqa: E402

VOCAB = Vocabulary.model_validate(SMALL_VOCAB)


def rec(key: str, scores: dict[str, float], reference: list[str] | None = None, **kw) -> Record:
    """A record as a build writes it: candidates = the scored labels, labels = those >= 0.5."""
    labels = [n for n in VOCAB.names if scores.get(n, 0) >= 0.5]
    return Record(key=key, status="ok", labels=labels, scores=scores, candidates=[n for n in VOCAB.names if n in scores],
                  reference=reference, ext="jpg", **kw)


def confident(i: int) -> Record:
    return rec(f"ok{i:02d}", {"cat": 0.97, "car": 0.02}, ["cat"])


def output(tmp_path: Path, records: list[Record], name: str = "out") -> Path:
    images = {r.key: jpeg(i) for i, r in enumerate(records)}
    return write_output(tmp_path / name, records, VOCAB, images)


def test_near_threshold_and_rejected_candidates_rank_first(tmp_path: Path) -> None:
    records = [confident(i) for i in range(12)]
    records += [rec("near", {"dog": 0.53}, ["dog"]), rec("rejected", {"cat": 0.97, "bus": 0.42}, ["cat"])]
    result = find_issues(output(tmp_path, records))
    machine = [r for r in result["rows"] if r["kind"] == "machine"]
    assert [r["key"] for r in machine[:2]] == ["near", "rejected"]
    assert machine[0]["top_label"] == "dog" and "near threshold" in json.loads(machine[0]["suspects"])[0]["why"]
    why = json.loads(machine[1]["suspects"])[0]
    assert why["label"] == "bus" and "rejected by stage 2" in why["why"]
    assert machine[0]["issue_score"] > machine[2]["issue_score"]
    assert [r["rank"] for r in machine] == list(range(1, 15))


def test_human_labels_the_model_contradicts_rank_first(tmp_path: Path) -> None:
    records = [confident(i) for i in range(12)]
    records.append(rec("human_missed", {"cat": 0.97, "dog": 0.96}, ["cat"]))  # human forgot the dog
    records.append(rec("human_added", {"cat": 0.97}, ["cat", "apple"]))  # apple: stage 1 never proposed it
    result = find_issues(output(tmp_path, records))
    human = [r for r in result["rows"] if r["kind"] == "reference"]
    assert {r["key"] for r in human[:2]} == {"human_missed", "human_added"}
    assert result["summary"]["kinds"]["reference"]["images"] == 14
    by_key = {r["key"]: json.loads(r["suspects"])[0] for r in human[:2]}
    assert by_key["human_added"]["label"] == "apple" and "not proposed in stage 1" in by_key["human_added"]["why"]
    assert by_key["human_missed"]["label"] == "dog" and by_key["human_missed"]["given"] is False


def test_no_reference_ranks_machine_labels_only_and_says_why(tmp_path: Path) -> None:
    out = output(tmp_path, [rec(f"k{i}", {"cat": 0.9 - i / 20}) for i in range(6)])
    result = find_issues(out)
    assert set(result["summary"]["kinds"]) == {"machine"}
    with pytest.raises(UserError, match="no human labels"):
        find_issues(out, kinds=("reference",))


def test_ensemble_split_raises_suspicion(tmp_path: Path) -> None:
    def with_votes(key: str, votes: tuple[bool, bool, bool]) -> Record:
        r = rec(key, {"cat": 0.9})
        r.raw = [{"tag": f"subset:animal:{v}", "text": json.dumps({"labels": ["cat"] if yes else []})}
                 for v, yes in enumerate(votes)]
        return r

    out = output(tmp_path, [with_votes("united", (True, True, True)), with_votes("split", (True, False, False))])
    ev = li.gather(out)
    assert ev.ensemble is not None
    machine = {r["key"]: r for r in find_issues(out)["rows"]}
    assert machine["split"]["issue_score"] > machine["united"]["issue_score"]
    assert "ensemble split" in machine["split"]["suspects"]


def test_other_build_disagreement_counts(tmp_path: Path) -> None:
    mine = [rec("a", {"cat": 0.8}), rec("b", {"cat": 0.8})]
    theirs = [rec("a", {"cat": 0.8}), rec("b", {"cat": 0.1})]
    out, other = output(tmp_path, mine), output(tmp_path, theirs, "other")
    rows = {r["key"]: r for r in find_issues(out, others=(other,))["rows"]}
    assert rows["b"]["issue_score"] > rows["a"]["issue_score"]
    assert "1 of 1 other builds disagree" in rows["b"]["suspects"]
    with pytest.raises(UserError, match="no image key in common"):
        find_issues(out, others=(output(tmp_path, [rec("zzz", {"cat": 0.8})], "stranger"),))


def test_reviewed_and_failed_records_are_not_ranked(tmp_path: Path) -> None:
    reviewed = rec("done", {"dog": 0.52}, ["dog"])
    reviewed.review = {"machine_labels": ["dog"], "by": "ann", "at": "2026-01-01"}
    failed = Record(key="bad", status="failed", error="decode")
    result = find_issues(output(tmp_path, [confident(0), confident(1), reviewed, failed]))
    assert {r["key"] for r in result["rows"]} == {"ok00", "ok01"}
    assert result["summary"]["already_reviewed"] == 1


def test_written_table_and_report(tmp_path: Path) -> None:
    records = [confident(i) for i in range(5)] + [rec("near", {"dog": 0.55}, ["dog"])]
    out = output(tmp_path, records)
    result = run_issues(out)
    table = pq.read_table(out / "issues" / "issues.parquet").to_pylist()
    assert len(table) == 12 and table[0]["kind"] == "machine" and table[0]["key"] == "near"
    csv = (out / "issues" / "issues.csv").read_text()
    assert csv.splitlines()[0].startswith('"kind","rank","key","issue_score"')
    report = Path(result["written"]["markdown"]).read_text()
    assert "## Machine labels" in report and "`near`" in report and "## Human reference labels" in report
    assert "SIMULATED" not in report  # these records are not simulated
    summary = json.loads((out / "issues" / "summary.json").read_text())
    assert summary["output"] == "out" and summary["images"] == 6  # published: no local path


def test_eval_report_links_the_ranking(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="tagllm[eval] is not installed")
    from builder.analysis.evaluate import run_eval

    out = output(tmp_path, [confident(i) for i in range(4)] + [rec("near", {"dog": 0.55}, ["dog"])])
    run_eval(out, plots=False)
    assert "Label issues: not ranked yet (`tagllm issues OUT`" in (out / "eval" / "report.md").read_text()
    run_issues(out)
    run_eval(out, plots=False)
    assert "Label issues: [../issues/report.md](../issues/report.md)" in (out / "eval" / "report.md").read_text()
