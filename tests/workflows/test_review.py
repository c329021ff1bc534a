"""`review import`: corrections change exactly the reviewed labels and survive relabel and rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from reviewdata import answers_for, check_only_reviewed_changed, label_studio_export, published

from builder.cli import main
from builder.errors import UserError
from builder.publish import layout
from builder.publish.corrections import corrections_path, load_corrections
from builder.workflows.maintain import relabel

pytest.importorskip("cleanlab", reason="tagllm[review] (cleanlab) is not installed")

from builder.analysis.label_studio import export_label_studio  # noqa: E402
from builder.workflows.review import import_review  # noqa: E402


def reviewed(out: Path, budget: int = 3) -> tuple[Path, dict[str, list[str]]]:
    """Export `budget` tasks and write a Label Studio-style export answering each of them."""
    info = export_label_studio(out, select="issues", budget=budget)
    tasks = json.loads((Path(info["dest"]) / "tasks.json").read_text())
    names = [c.get("value") for c in _choices(Path(info["dest"]) / "config.xml")]
    answers = answers_for(tasks, names)
    path = out.parent / "ls-export.json"
    path.write_text(json.dumps(label_studio_export(tasks, answers)))
    return path, answers


def _choices(config: Path) -> list:
    import xml.etree.ElementTree as ET

    return ET.fromstring(config.read_text()).find("Choices").findall("Choice")


def test_import_changes_exactly_the_reviewed_labels(build) -> None:
    out = build().out
    before = published(out)
    export, answers = reviewed(out)
    info = import_review(out, export)
    after = published(out)
    check_only_reviewed_changed(before, after, answers)
    assert info["imported"] == info["reviewed"] == info["changed"] == 3 and info["simulated"] is True
    stats = layout.read_json(out / layout.STATS)
    assert stats["reviewed"] == 3 and stats["review_changed"] == 3
    assert stats["review_added"] + stats["review_removed"] == 3  # one label toggled per image
    card = (out / layout.CARD).read_text()
    assert "## Human review" in card and "3 images have reviewed labels (label-studio user 1), imported with `tagllm review import`; 3 of them changed" in card
    fixes = load_corrections(out)
    assert len(fixes) == 3 and all(f.by == "label-studio user 1" and f.tool == "label-studio" for f in fixes.values())


def test_corrections_survive_relabel_and_overwrite(build, write_recipe) -> None:
    out = build().out
    export, answers = reviewed(out)
    import_review(out, export)
    relabel(out, threshold=0.9)  # every machine label is recomputed from the cache
    after = published(out)
    for key, labels in answers.items():
        assert after[key]["hf"] == after[key]["index"] == labels
    recipe = write_recipe()
    result = build(recipe, overwrite=True)  # start over: engine answers asked again, corrections kept
    assert result.stats["reviewed"] == 3 and corrections_path(out).is_file()
    assert {k: v["index"] for k, v in published(out).items() if k in answers} == answers


def test_corrections_of_one_output_apply_to_another_by_digest(build, write_recipe, tmp_path: Path) -> None:
    out = build().out
    export, answers = reviewed(out, budget=2)
    import_review(out, export)
    other = build(write_recipe("other.yaml", output={"dir": str(tmp_path / "other")})).out
    info = import_review(other, corrections_path(out))
    assert info["reviewed"] == 2
    assert {k: v["index"] for k, v in published(other).items() if v["review"]} == answers


def test_import_refuses_what_it_cannot_apply(build, tmp_path: Path) -> None:
    out = build().out
    export, _ = reviewed(out, budget=1)
    tasks = json.loads(export.read_text())
    tasks[0]["data"]["key"] = "not-in-this-output"
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps(tasks))
    with pytest.raises(UserError, match="1 reviewed image\\(s\\) are not in"):
        import_review(out, stranger)
    tasks[0]["annotations"] = []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(tasks))
    with pytest.raises(UserError, match="no submitted annotation"):
        import_review(out, empty)
    assert not corrections_path(out).exists()


def test_cli_review_loop(build) -> None:
    out = build().out
    runner = CliRunner()
    issues = runner.invoke(main, ["issues", str(out)])
    assert issues.exit_code == 0, issues.output
    assert "machine labels: 12 images ranked" in issues.output and "SIMULATED" in issues.output
    assert "issues/report.md" in (out / layout.CARD).read_text()
    exported = runner.invoke(main, ["review", "export", str(out), "--budget", "2"])
    assert exported.exit_code == 0 and "2 tasks (issues)" in exported.output, exported.output
    tasks = json.loads((out / "review" / "label-studio" / "tasks.json").read_text())
    export = out.parent / "e.json"
    export.write_text(json.dumps(label_studio_export(tasks, {t["data"]["key"]: [] for t in tasks})))
    imported = runner.invoke(main, ["review", "import", str(out), str(export), "--reviewer", "Ada"])
    assert imported.exit_code == 0, imported.output
    assert "imported 2 reviewed images" in imported.output
    assert {f.by for f in load_corrections(out).values()} == {"Ada"}
    bad = runner.invoke(main, ["review", "import", str(out), str(out / "nope.json")])
    assert bad.exit_code != 0 and bad.output.startswith("error: ") and len(bad.output.splitlines()) == 1
