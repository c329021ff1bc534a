"""Every gallery recipe passes `tagllm recipe check` and builds a fixture in its official layout.

The fixtures are written by tests/sources/layouts.py (real file formats and column names, images made
here); the recipes are used as shipped, with only the data paths, engine (simulated) and output
folder overridden, so the vocabularies, concept sheets and source settings in recipes/ are what is tested.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from layouts import write_coco_split, write_nuswide, write_objects365, write_openimages, write_voc

from builder.analysis.evaluate import evaluate
from builder.cli import main
from builder.publish import layout
from builder.recipe.model import load_recipe
from builder.run.build import Builder

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
GALLERY = ["coco2014.yaml", "coco2014-train.yaml", "objects365.yaml", "objects365-train.yaml", "voc2007.yaml",
           "nuswide.yaml", "openimages.yaml"]


def test_gallery_is_shipped() -> None:
    assert set(GALLERY) <= {p.name for p in RECIPES.glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipe_check_as_shipped(name: str) -> None:
    """Before the download: vocabulary, concept sheet and settings check; the source is not opened."""
    result = CliRunner().invoke(main, ["recipe", "check", "--no-source", str(RECIPES / name)])
    assert result.exit_code == 0, result.output
    assert f"{name}: ok" in result.output


def _coco(tmp: Path, split: str) -> list[str]:
    write_coco_split(tmp, split, 6, seed=3)
    return [f"source.path={tmp / split}", f"source.annotations={tmp / 'annotations' / f'instances_{split}.json'}"]


def _objects365(tmp: Path, split: str) -> list[str]:
    cats = {1: "Person", 38: "Moniter/TV", 53: "Bakset", 365: "Table Tennis "}
    images = [(5, "patch0/objects365_v1_00000005.jpg", [1, 38]), (2, "patch1/objects365_v2_00000002.jpg", [53, 365]),
              (9, "patch1/objects365_v2_00000009.jpg", [])]
    write_objects365(tmp, split, images, cats)
    return [f"source.path={tmp / split}", f"source.annotations={tmp / 'annotations' / f'zhiyuan_objv2_{split}.json'}"]


def _voc(tmp: Path) -> list[str]:
    images = {"000005": [("chair", False), ("chair", True), ("diningtable", True)],
              "000007": [("car", False)], "000009": [("person", False), ("horse", False), ("tvmonitor", False)]}
    write_voc(tmp / "VOCdevkit" / "VOC2007", images, {"trainval": list(images)})
    return [f"source.path={tmp / 'VOCdevkit' / 'VOC2007'}"]


def _nuswide(tmp: Path) -> list[str]:
    concepts = ["airport", "animal", "beach", "dog", "sky", "zebra"]
    rows = [("actor/0001_2124494179.jpg", {"sky"}), ("airport/0002_31231.jpg", {"airport", "sky"}),
            ("animal/0003_99.jpg", {"animal", "dog"}), ("zebra/0004_7.jpg", {"animal", "zebra"})]
    write_nuswide(tmp / "nuswide", concepts, {"Train": rows, "Test": rows[:2]})
    return [f"source.path={tmp / 'nuswide' / 'Flickr'}", f"source.annotations={tmp / 'nuswide'}"]


def _openimages(tmp: Path) -> list[str]:
    classes = {"/m/01g317": "Person", "/m/0bt9lr": "Dog", "/m/0k4j": "Car", "/m/01yrx": "Cat"}
    rows = [("000a1249af2bc5f0", "verification", "/m/01g317", "1"), ("000a1249af2bc5f0", "verification", "/m/0k4j", "0"),
            ("000a1249af2bc5f0", "crowdsource-verification", "/m/0zzzz9", "1"),
            ("0b6f22bf3b586889", "verification", "/m/0bt9lr", "1"), ("0b6f22bf3b586889", "verification", "/m/01yrx", "0")]
    root = write_openimages(tmp / "openimages", classes, rows)
    return [f"source.path={root / 'validation'}",
            f"source.annotations={root / 'oidv7-val-annotations-human-imagelabels.csv'}",
            f"source.classes={root / 'oidv7-class-descriptions-boxable.csv'}"]


FIXTURES = {
    "coco2014.yaml": lambda t: _coco(t, "val2014"), "coco2014-train.yaml": lambda t: _coco(t, "train2014"),
    "objects365.yaml": lambda t: _objects365(t, "val"), "objects365-train.yaml": lambda t: _objects365(t, "train"),
    "voc2007.yaml": _voc, "nuswide.yaml": _nuswide, "openimages.yaml": _openimages,
}
EXPECTED = {  # key -> human labels the recipe's source must read from the fixture
    "objects365.yaml": {"objects365_v1_00000005": ["Person", "Monitor/TV"], "objects365_v2_00000002": ["Basket", "Table Tennis"],
                        "objects365_v2_00000009": []},
    "voc2007.yaml": {"000005": ["chair"], "000007": ["car"], "000009": ["person", "horse", "tv monitor"]},
    "nuswide.yaml": {"actor_0001_2124494179": ["sky"], "zebra_0004_7": ["animal", "zebra"]},
    "openimages.yaml": {"000a1249af2bc5f0": ["Person"], "0b6f22bf3b586889": ["Dog"]},
}


@pytest.mark.parametrize("name", GALLERY)
def test_recipe_builds_its_fixture(name: str, tmp_path: Path) -> None:
    sets = FIXTURES[name](tmp_path) + ["engine.kind=simulated", f"output.dir={tmp_path / 'out'}"]
    check = CliRunner().invoke(main, ["recipe", "check", str(RECIPES / name), *(f"--set={s}" for s in sets)])
    assert check.exit_code == 0 and f"{name}: ok" in check.output, check.output  # source opened on the fixture
    loaded = load_recipe(RECIPES / name, sets)
    result = Builder(loaded, tmp_path / "out", progress=False).run()
    records = {r.key: r for r in layout.iter_records(tmp_path / "out")}
    assert result.simulated and result.stats["images"] == len(records) > 0
    assert all(r.status == "ok" for r in records.values()), [(r.key, r.detail) for r in records.values()]
    for key, labels in EXPECTED.get(name, {}).items():
        if labels is not None:
            assert records[key].reference == labels, key
    report = evaluate(tmp_path / "out")
    assert report["simulated"] and report["images"] == len(records)
    verified = name in ("voc2007.yaml", "openimages.yaml")
    assert ("verified" in report) == verified
    if verified:
        assert report["verified"]["records_with_verified_negatives"] >= 1
        cli = CliRunner().invoke(main, ["eval", str(tmp_path / "out"), "--no-plots"])
        assert cli.exit_code == 0, cli.output
        assert "verified absent counts as a negative" in cli.output
        assert "left out of precision" in (tmp_path / "out" / "eval" / "report.md").read_text()
        assert "left out of precision" in (tmp_path / "out" / "README.md").read_text()  # the card says so too
