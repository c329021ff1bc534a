"""The review round trip against a real Label Studio (PyPI `label-studio`, SQLite, local-files serving).

Label Studio runs from its own venv (`make label-studio`, used by `make test-slow`), never from
tagllm's: `builder/dev/label_studio_roundtrip.py` runs with that venv's Python, starts the server on
127.0.0.1, creates the project from the exported config through `label-studio-sdk`, imports the
tasks, checks an image is served, submits this test's answers through the API, exports the
project as JSON and stops the server. Then `tagllm review import` applies the export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from reviewdata import answers_for, check_only_reviewed_changed, published

from builder.recipe.model import load_recipe

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "builder" / "dev" / "label_studio_roundtrip.py"


def label_studio_python() -> Path:
    path = Path(os.environ.get("TAGLLM_LABEL_STUDIO_PYTHON") or REPO / ".cache" / "label-studio" / "venv" / "bin" / "python")
    if not path.is_file() or not path.with_name("label-studio").is_file():
        pytest.skip(f"no Label Studio venv at {path}: run `make label-studio` (or `make test-slow`, which does)")
    return path


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_label_studio_round_trip_changes_exactly_the_reviewed_labels(build, tmp_path: Path) -> None:
    ls_python = label_studio_python()
    out = build().out
    before = published(out)
    export_dir = tmp_path / "ls"
    cli = [sys.executable, "-m", "builder"]
    run = subprocess.run([*cli, "review", "export", str(out), "--select", "issues", "--budget", "4",
                          "--dest", str(export_dir)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    tasks = json.loads((export_dir / "tasks.json").read_text())
    names = load_recipe(out / "recipe.yaml").vocab.names
    answers = answers_for(tasks[:3], names)  # the 4th task stays unannotated in Label Studio
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    saved = tmp_path / "export.json"
    drive = subprocess.run([str(ls_python), str(DRIVER), str(export_dir), "--save", str(saved),
                            "--answers", str(tmp_path / "answers.json")],
                           capture_output=True, text=True, timeout=840, check=False)
    assert drive.returncode == 0, drive.stdout[-2000:] + drive.stderr[-4000:]
    summary = json.loads(drive.stdout.strip().splitlines()[-1])
    assert summary["tasks"] == 4 and summary["submitted_by_script"] == 3 and summary["annotated"] == 3
    exported = json.loads(saved.read_text())
    assert len(exported) == 4 and {t["data"]["digest"] for t in exported} == {t["data"]["digest"] for t in tasks}
    imported = subprocess.run([*cli, "review", "import", str(out), str(saved)], capture_output=True, text=True,
                              check=False)
    assert imported.returncode == 0, imported.stderr
    assert "imported 3 reviewed images (1 tasks without annotation)" in imported.stdout
    check_only_reviewed_changed(before, published(out), answers)
    card = (out / "README.md").read_text()
    assert "3 images have reviewed labels (label-studio user 1)" in card and "3 of them changed" in card
