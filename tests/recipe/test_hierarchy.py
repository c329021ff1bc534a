"""A grouped vocabulary from a class list and a hierarchy (Open Images' files), library and command."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from builder.cli import main
from builder.recipe.hierarchy import read_class_descriptions, vocabulary_from_hierarchy
from builder.recipe.vocab import load_vocabulary

TREE = {"LabelName": "/m/root", "Subcategory": [
    {"LabelName": "/m/x"},
    {"LabelName": "/m/a", "Subcategory": [{"LabelName": "/m/d"}, {"LabelName": "/m/c"}]},
    {"LabelName": "/m/v", "Subcategory": [{"LabelName": "/m/k"}, {"LabelName": "/m/d"}],
     "Part": [{"LabelName": "/m/w"}]}]}
CLASSES = "/m/a,Animal\n/m/d,Dog\n/m/c,Cat\n/m/v,Vehicle\n/m/k,Car\n/m/x,Coin\n/m/w,Wheel\n/m/z,Zither\n"


def test_groups_follow_branches(tmp_path: Path) -> None:
    (tmp_path / "classes.csv").write_text("LabelName,DisplayName\n" + CLASSES)
    names = read_class_descriptions(tmp_path / "classes.csv")
    v = vocabulary_from_hierarchy(names, TREE, max_group=5, min_group=2)
    # Dog is under Animal and Vehicle: it joins its first parent; parts count as children; classes
    # outside the tree and top-level leaves end in the 'other' groups.
    assert [(g.name, [label.name for label in g.labels]) for g in v.groups] == [
        ("Animal", ["Animal", "Dog", "Cat"]), ("Vehicle", ["Vehicle", "Car", "Wheel"]), ("other 1", ["Coin", "Zither"])]


def test_small_and_large_branches(tmp_path: Path) -> None:
    (tmp_path / "classes.csv").write_text(CLASSES)  # no header row (older class lists)
    names = read_class_descriptions(tmp_path / "classes.csv")
    v = vocabulary_from_hierarchy(names, TREE, max_group=2, min_group=3)
    assert sorted(v.names) == sorted(names.values())
    assert all(len(g.labels) <= 3 for g in v.groups)


def test_command_writes_a_loadable_vocabulary(tmp_path: Path) -> None:
    (tmp_path / "classes.csv").write_text(CLASSES)
    (tmp_path / "tree.json").write_text(json.dumps(TREE))
    out = tmp_path / "vocab.yaml"
    result = CliRunner().invoke(main, ["vocab", "from-hierarchy", str(tmp_path / "classes.csv"),
                                       str(tmp_path / "tree.json"), "--out", str(out), "--min-group", "2"])
    assert result.exit_code == 0, result.output
    assert "8 labels in 3 groups" in result.output
    vocab = load_vocabulary(out)
    assert vocab.names == ["Animal", "Dog", "Cat", "Vehicle", "Car", "Wheel", "Coin", "Zither"]
    assert out.read_text().startswith("# Classes of classes.csv")
