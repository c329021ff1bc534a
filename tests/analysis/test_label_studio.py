"""Label Studio export (tasks, predictions, config, images) and reading its JSON export back."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from tinydata import SMALL_VOCAB

from builder.errors import UserError
from builder.images import image_digest
from builder.publish import layout
from builder.recipe.vocab import Vocabulary

pytest.importorskip("cleanlab", reason="tagllm[review] (cleanlab) is not installed")

from builder.analysis.label_studio import export_label_studio, labeling_config, read_export  # noqa: E402

VOCAB = Vocabulary.model_validate(SMALL_VOCAB)


def test_labeling_config_is_one_multiple_choice_over_the_vocabulary() -> None:
    root = ET.fromstring(labeling_config(VOCAB))
    choices = root.find("Choices")
    assert choices is not None and choices.get("choice") == "multiple" and choices.get("toName") == "image"
    assert [c.get("value") for c in choices.findall("Choice")] == VOCAB.names  # "hot dog" with its space
    assert root.find("Image").get("value") == "$image"


@pytest.fixture
def built(build, photo_folder: Path) -> Path:
    return build().out


def test_export_writes_tasks_predictions_and_the_original_images(built: Path, photo_folder: Path) -> None:
    info = export_label_studio(built, select="issues", budget=4)
    dest = Path(info["dest"])
    assert dest == built / "review" / "label-studio" and info["tasks"] == 4
    tasks = json.loads((dest / "tasks.json").read_text())
    records = {r.key: r for r in layout.iter_records(built)}
    originals = {image_digest(p.read_bytes()) for p in photo_folder.glob("*.jpg")}
    for task in tasks:
        data = task["data"]
        assert data["image"].startswith("/data/local-files/?d=images/")
        name = data["image"].split("d=", 1)[1]
        assert image_digest((dest / name).read_bytes()) == data["digest"] and data["digest"] in originals
        assert data["simulated"] is True and data["why"].startswith(("machine labels:", "reference labels:"))
        (prediction,) = task["predictions"]
        chosen = prediction["result"][0]["value"]["choices"] if prediction["result"] else []
        assert chosen == records[data["key"]].labels and 0.0 <= prediction["score"] <= 1.0
        assert data["human_labels"] == records[data["key"]].reference
    assert (dest / "config.xml").read_text() == labeling_config(VOCAB)


def test_export_forms_and_selections(built: Path, tmp_path: Path) -> None:
    info = export_label_studio(built, tmp_path / "ls" / "x", select="random", budget=3, seed=5,
                               document_root=tmp_path / "ls")
    tasks = json.loads((tmp_path / "ls" / "x" / "tasks.json").read_text())
    assert all(t["data"]["image"].startswith("/data/local-files/?d=x/images/") for t in tasks)
    again = export_label_studio(built, tmp_path / "again", select="random", budget=3, seed=5)
    assert [t["data"]["key"] for t in json.loads((tmp_path / "again" / "tasks.json").read_text())] == \
        [t["data"]["key"] for t in tasks] and info["select"] == again["select"] == "random"
    export_label_studio(built, tmp_path / "url", select="uncertain", budget=2, image_form="url",
                        url_prefix="https://example.org/review/")
    url_tasks = json.loads((tmp_path / "url" / "tasks.json").read_text())
    assert all(t["data"]["image"].startswith("https://example.org/review/images/") for t in url_tasks)
    assert url_tasks[0]["data"]["why"].startswith(("closest to threshold", "no candidate"))
    with pytest.raises(UserError, match="needs --url-prefix"):
        export_label_studio(built, tmp_path / "bad", image_form="url")
    with pytest.raises(UserError, match="must contain the export folder"):
        export_label_studio(built, tmp_path / "bad", document_root=tmp_path / "elsewhere")
    with pytest.raises(UserError, match="--budget 0"):
        export_label_studio(built, tmp_path / "bad", budget=0)


def annotated(data: dict, *annotations: dict) -> dict:
    return {"id": 7, "data": data, "annotations": list(annotations)}


def ann(labels: list[str], at: str, cancelled: bool = False, by: int | dict = 3) -> dict:
    return {"completed_by": by, "was_cancelled": cancelled, "created_at": at, "updated_at": at,
            "result": [{"from_name": "labels", "to_name": "image", "type": "choices", "value": {"choices": labels}}]}


def test_read_export_takes_the_latest_submitted_annotation(tmp_path: Path) -> None:
    data = {"key": "k1", "digest": "d1", "image": "x"}
    export = tmp_path / "export.json"
    export.write_text(json.dumps([
        annotated(data, ann(["dog"], "2026-01-01T00:00:00Z"), ann(["cat", "bus"], "2026-01-02T00:00:00Z"),
                  ann(["apple"], "2026-01-03T00:00:00Z", cancelled=True)),
        annotated({"key": "k2", "digest": "d2", "image": "y"}),
        annotated({"key": "k3", "digest": "d3", "image": "z"}, ann([], "2026-01-02T00:00:00Z", by={"id": 9})),
    ]))
    fixes, unannotated = read_export(export, VOCAB)
    assert unannotated == 1
    assert [(f.key, f.digest, f.labels, f.by) for f in fixes] == [
        ("k1", "d1", ["cat", "bus"], "label-studio user 3"), ("k3", "d3", [], "label-studio user 9")]
    assert fixes[0].at == "2026-01-02T00:00:00Z" and fixes[0].tool == "label-studio" and fixes[0].task == "7"
    assert read_export(export, VOCAB, reviewer="Ada")[0][0].by == "Ada"


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "not a readable Label Studio JSON export"),
    ('{"a": 1}', "expected a list of tasks"),
    ('[{"data": {"key": "k"}}]', "task 0 has no data.digest"),
])
def test_read_export_rejects_what_it_cannot_use(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "e.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_export(path, VOCAB)


def test_read_export_names_the_task_with_an_unknown_label(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text(json.dumps([annotated({"key": "k9", "digest": "d"}, ann(["unicorn"], "2026"))]))
    with pytest.raises(UserError, match=r"task 7 \(key 'k9'\): labels not in the vocabulary: unicorn"):
        read_export(path, VOCAB)


def test_export_reads_images_from_webdataset_only_outputs(tmp_path: Path) -> None:
    from tinydata import jpeg

    from builder.dev.synthetic import write_output
    from builder.records import Record

    records = [Record(key=f"k{i}", status="ok", labels=["cat"], scores={"cat": 0.5 + i / 10}, candidates=["cat"],
                      ext="jpg") for i in range(3)]
    images = {r.key: jpeg(i) for i, r in enumerate(records)}
    out = write_output(tmp_path / "wds", records, VOCAB, images, formats=("webdataset",))
    info = export_label_studio(out, tmp_path / "ls", select="uncertain", budget=3)
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert info["tasks"] == 3 and tasks[0]["data"]["key"] == "k0"  # 0.5: closest to the threshold
    assert {t["data"]["digest"] for t in tasks} == {image_digest(b) for b in images.values()}
    hf_less = write_output(tmp_path / "index-only", records, VOCAB, images, formats=())
    with pytest.raises(UserError, match="no image bytes stored for 1 selected record"):
        export_label_studio(hf_less, tmp_path / "none", select="random", budget=1)
