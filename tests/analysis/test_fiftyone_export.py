"""`tagllm export fiftyone`: FiftyOne's image-classification layout, read back by FiftyOne's own importer.

The default suite checks the files; the slow test parses them with FiftyOne's
FiftyOneImageClassificationDatasetImporter (no database needed) in FiftyOne's own cached venv
(`make test-slow` makes it under .cache/fiftyone/), and checks the loader's calls against FiftyOne's API.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.errors import UserError
from builder.publish import layout

REPO = Path(__file__).resolve().parents[2]
FIFTYONE_PYTHON = Path(os.environ.get("TAGLLM_FIFTYONE_PYTHON", REPO / ".cache/fiftyone/venv/bin/python"))


def exported(build, tmp_path: Path) -> tuple[Path, Path]:
    out = build().out
    dest = tmp_path / "fo"
    result = CliRunner().invoke(main, ["export", "fiftyone", str(out), str(dest)])
    assert result.exit_code == 0, result.output
    assert "SIMULATED" in result.output and "load_fiftyone.py" in result.output
    return out, dest


def test_export_writes_images_and_labels_with_confidences(build, tmp_path: Path) -> None:
    out, dest = exported(build, tmp_path)
    records = {r.key: r for r in layout.iter_records(out)}
    labels = json.loads((dest / "labels.json").read_text())
    truth = json.loads((dest / "ground_truth.json").read_text())
    candidates = json.loads((dest / "candidates.json").read_text())
    from builder.recipe.model import load_recipe

    assert labels["classes"] == truth["classes"] == load_recipe(out / layout.RECIPE).vocab.names
    assert set(labels["labels"]) == set(records)  # the photo folder's keys are safe file names
    for key, r in records.items():
        assert (dest / "data" / f"{key}.{r.ext}").read_bytes()[:2] == b"\xff\xd8"
        assert labels["labels"][key] == [{"label": n, "confidence": round(r.scores[n], 6)} for n in r.labels]
        assert truth["labels"][key] == [{"label": n} for n in r.reference]
        assert [c["label"] for c in candidates["labels"][key]] == r.candidates
        assert all(c["attributes"]["accepted"] == (c["label"] in r.labels) for c in candidates["labels"][key])
    readme = (dest / "README.md").read_text()
    assert "SIMULATED" in readme and "python load_fiftyone.py" in readme and "FiftyOneImageClassificationDataset" in readme
    compile((dest / "load_fiftyone.py").read_text(), "load_fiftyone.py", "exec")
    for path in dest.rglob("*"):
        if path.suffix in (".json", ".py", ".md"):
            assert str(tmp_path) not in path.read_text() and str(REPO) not in path.read_text()
    with pytest.raises(UserError, match="not empty"):
        from builder.analysis.fiftyone_export import export_fiftyone

        export_fiftyone(out, dest)


def test_unsafe_keys_get_unique_file_names() -> None:
    from builder.analysis.fiftyone_export import file_stem

    taken: set[str] = set()
    assert file_stem("a/b c", taken) == "a_b_c" and file_stem("a b/c", taken) == "a_b_c-2"
    assert file_stem("../x", taken) == "x" and file_stem("plain-key_1", taken) == "plain-key_1"


@pytest.mark.slow
def test_fiftyone_importer_reads_the_export(build, tmp_path: Path) -> None:
    if not FIFTYONE_PYTHON.is_file():
        pytest.skip(f"no FiftyOne venv at {FIFTYONE_PYTHON} (make test-slow creates it)")
    out, dest = exported(build, tmp_path)
    script = r'''
import inspect, json, os, sys
import fiftyone as fo
import fiftyone.utils.data as foud

dest = sys.argv[1]
found = {}
for name in ("labels.json", "ground_truth.json", "candidates.json"):
    importer = foud.FiftyOneImageClassificationDatasetImporter(dataset_dir=dest, labels_path=name)
    rows = {}
    with importer:
        info = importer.get_dataset_info()
        for image_path, _, label in importer:
            items = label.classifications if isinstance(label, fo.Classifications) else [label]
            rows[os.path.basename(image_path)] = [[c.label, c.confidence, c["accepted"] if c.has_field("accepted") else None]
                                                  for c in items]
    found[name] = {"classes": info["classes"], "rows": rows, "label_cls": [c.__name__ for c in importer.label_cls]}
loader = {name: sorted(inspect.signature(getattr(fo.Dataset, name)).parameters) for name in ("from_dir", "merge_dir")}
print(json.dumps({"found": found, "loader": loader, "kind": fo.types.FiftyOneImageClassificationDataset.__name__}))
'''
    done = subprocess.run([str(FIFTYONE_PYTHON), "-c", script, str(dest)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FIFTYONE_DO_NOT_TRACK": "true"})
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    records = {f"{r.key}.{r.ext}": r for r in layout.iter_records(out)}
    got = data["found"]
    names = json.loads((dest / "labels.json").read_text())["classes"]
    assert got["labels.json"]["classes"] == names
    assert set(got["labels.json"]["rows"]) == set(records)
    for file, r in records.items():
        assert got["labels.json"]["rows"][file] == [[n, pytest.approx(r.scores[n], abs=1e-6), None] for n in r.labels]
        assert got["ground_truth.json"]["rows"][file] == [[n, None, None] for n in r.reference]
        assert got["candidates.json"]["rows"][file] == [[n, pytest.approx(r.scores[n], abs=1e-6), n in r.labels]
                                                        for n in r.candidates]
    loader = (dest / "load_fiftyone.py").read_text()
    for used in ("dataset_dir", "dataset_type", "labels_path", "label_field", "name", "overwrite"):
        assert used in data["loader"]["from_dir"] and f"{used}=" in loader
    assert {"dataset_dir", "dataset_type", "labels_path", "label_field"} <= set(data["loader"]["merge_dir"])
    assert data["kind"] == "FiftyOneImageClassificationDataset"
