"""Readers of the benchmark layouts: VOC, NUS-WIDE, Open Images, Objects365 (COCO-style with path_tail)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from layouts import write_nuswide, write_objects365, write_openimages, write_voc
from sources.test_partition import assert_partition

from builder.analysis.verified import known_mask, masked_metrics
from builder.errors import UserError
from builder.recipe.model import SourceSpec
from builder.recipe.vocab import Vocabulary
from builder.records import VERIFIED_ABSENT, Record
from builder.sources import open_source

PETS = Vocabulary.model_validate({"name": "pets", "groups": [
    {"name": "animal", "labels": [{"name": "cat"}, {"name": "dog"}, {"name": "horse"}]},
    {"name": "thing", "labels": [{"name": "car"}, {"name": "dining table", "synonyms": ["diningtable"]}]}]})


def _open(tmp: Path, vocab: Vocabulary = PETS, **fields: object):
    return open_source(SourceSpec(**fields), vocab, tmp)


def _voc(tmp: Path) -> Path:
    images = {"a1": [("dog", False), ("cat", True)], "a2": [("diningtable", False), ("dog", True)], "a3": []}
    return write_voc(tmp / "VOC2007", images, {"train": ["a2", "a1", "a3"], "val": ["a3"]}, skip_image=("a3",))


@pytest.mark.parametrize(("mode", "a1", "absent"), [
    ("ignore", ["dog"], ["horse", "car", "dining table"]), ("positive", ["cat", "dog"], None), ("negative", ["dog"], None)])
def test_voc_difficult_modes(tmp_path: Path, mode: str, a1: list[str], absent: list[str] | None) -> None:
    _voc(tmp_path)
    items = list(_open(tmp_path, kind="voc", path="VOC2007", split="train", difficult=mode))
    assert [i.key for i in items] == ["a2", "a1", "a3"]  # the split file's order
    a2, first, a3 = items
    assert first.reference == a1 and first.ref.get(VERIFIED_ABSENT) == absent
    assert a2.reference == ["dining table"] or mode == "positive"
    assert (a3.error, a3.reference) == ("missing", [])  # listed, annotated, image not on disk: recorded


def test_voc_shards_and_errors(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    src = _open(tmp_path, kind="voc", path="VOC2007", split="train")
    assert src.size() == 3 and [i.key for i in src._slice(1, 3)] == ["a1", "a3"]
    (root / "Annotations" / "a1.xml").write_text("<annotation><object>")
    (root / "Annotations" / "a2.xml").write_text("<annotation><object><name>zebra</name></object></annotation>")
    a2, a1, _ = list(_open(tmp_path, kind="voc", path="VOC2007", split="train"))
    assert a1.error == "source" and "a1.xml: not valid XML" in a1.detail
    assert a2.error == "source" and "'zebra' is not in the vocabulary" in a2.detail
    with pytest.raises(UserError, match="no split file"):
        _open(tmp_path, kind="voc", path="VOC2007", split="test")


def test_nuswide_lists_labels_bad_lines_and_missing(tmp_path: Path) -> None:
    rows = [("cat/0001_1.jpg", {"cat"}), ("dog/0002_2.jpg", {"dog", "car"}), ("dog/0003_3.jpg", set()),
            ("car/0004_4.jpg", {"car"})]
    write_nuswide(tmp_path / "nus", ["car", "cat", "dog"], {"Train": rows}, bad_value=("dog", "Train", 2),
                  skip_image=("car/0004_4.jpg",))
    src = _open(tmp_path, kind="nuswide", path="nus/Flickr", annotations="nus", split="train")
    items = list(src)
    assert [i.key for i in items] == ["cat_0001_1", "dog_0002_2", "dog_0003_3", "car_0004_4"]
    assert items[0].reference == ["cat"] and items[1].reference == ["dog", "car"]
    assert items[2].error == "source" and "Labels_dog_Train.txt line 3" in items[2].detail
    assert (items[3].error, items[3].reference) == ("missing", ["car"])
    assert [i.key for i in src._slice(3, 4)] == ["car_0004_4"]
    (tmp_path / "nus" / "Groundtruth" / "TrainTestLabels" / "Labels_cat_Train.txt").write_text("0\n")
    with pytest.raises(UserError, match="1 lines for 4 listed images"):
        list(_open(tmp_path, kind="nuswide", path="nus/Flickr", annotations="nus", split="Train"))


@pytest.mark.parametrize("header", [True, False])
def test_openimages_positives_negatives_and_subset(tmp_path: Path, header: bool) -> None:
    classes = {"/m/01yrx": "Cat", "/m/0bt9lr": "Dog", "/m/0k4j": "Car"}
    vocab = Vocabulary.model_validate({"groups": [{"name": "a", "labels": [{"name": n} for n in classes.values()]}]})
    rows = [("ff01", "verification", "/m/0bt9lr", "1"), ("ff01", "verification", "/m/0k4j", "0"),
            ("ff01", "verification", "/m/0notboxable", "1"), ("0a02", "crowdsource-verification", "/m/01yrx", "0"),
            ("0a02", "verification", "/m/01yrx", "1"), ("0a03", "verification", "/m/0k4j", "0.5")]
    root = write_openimages(tmp_path / "oi", classes, rows, header=header)
    src = _open(tmp_path, vocab, kind="openimages", path="oi/validation",
                annotations=str(root / "oidv7-val-annotations-human-imagelabels.csv"),
                classes=str(root / "oidv7-class-descriptions-boxable.csv"))
    assert src.size() == 3 and [i.key for i in src._slice(2, 3)] == ["ff01"]
    conflict, bad, dog = list(src)
    assert [conflict.key, bad.key, dog.key] == ["0a02", "0a03", "ff01"]  # sorted ImageIDs
    assert dog.reference == ["Dog"] and dog.ref[VERIFIED_ABSENT] == ["Car"] and dog.image
    assert conflict.reference == [] and conflict.ref[VERIFIED_ABSENT] == []  # yes and no: undecided
    assert bad.error == "source" and "Confidence '0.5'" in bad.detail


def test_openimages_wrong_columns(tmp_path: Path) -> None:
    root = write_openimages(tmp_path / "oi", {"/m/0k4j": "Car"}, [("ff01", "verification", "/m/0k4j", "1")])
    (root / "labels.csv").write_text("ImageID,Label,Confidence\nff01,/m/0k4j,1\n")
    src = _open(tmp_path, kind="openimages", path="oi/validation", annotations="oi/labels.csv",
                classes="oi/oidv7-class-descriptions-boxable.csv")
    with pytest.raises(UserError, match="no column 'LabelName'"):
        list(src)


def test_objects365_path_tail_and_typo_names(tmp_path: Path) -> None:
    vocab = Vocabulary.model_validate({"groups": [{"name": "a", "labels": [
        {"name": "Monitor/TV", "synonyms": ["Moniter/TV"]}, {"name": "Person"}]}]})
    write_objects365(tmp_path, "val", [(3, "patch16/objects365_v2_00000003.jpg", [38, 1])], {1: "Person", 38: "Moniter/TV"})
    spec = dict(kind="coco", path="val", annotations="annotations/zhiyuan_objv2_val.json")
    (item,) = list(_open(tmp_path, vocab, **spec, path_tail=2))
    assert item.error is None and item.reference == ["Monitor/TV", "Person"] and item.image
    (plain,) = list(_open(tmp_path, vocab, **spec))
    assert plain.error == "missing"  # without path_tail the JSON's images/v1/... path is not on disk


def test_verified_metrics_leave_unknown_labels_out() -> None:
    names = ["cat", "dog", "car"]
    records = [Record("a", "ok", reference=["cat"], source={VERIFIED_ABSENT: ["dog"]}),
               Record("b", "ok", reference=["dog"])]
    truth = np.array([[1, 0, 0], [0, 1, 0]], dtype=bool)
    known = known_mask(records, names, truth)
    assert known.tolist() == [[True, True, False], [True, True, True]]
    pred = np.array([[1, 0, 1], [0, 1, 1]], dtype=bool)  # 'car' on a: never checked; on b: a real mistake
    m = masked_metrics(truth, pred, pred.astype(float), known, has_scores=True)
    assert (m["OP"], m["OR"]) == (2 / 3, 1.0)  # counted without the unknown pair it would be 2/4
    assert m["mAP"] == 1.0 and known_mask(records[1:], names, truth[1:]) is None


def test_listed_readers_cut_shards_like_one_read(tmp_path: Path) -> None:
    """Shard i of n (the interface of sources/base.py) over VOC, NUS-WIDE and Open Images fixtures."""
    _voc(tmp_path)
    assert_partition(_open(tmp_path, kind="voc", path="VOC2007", split="train"))
    rows = [(f"c/{i:04d}_{i}.jpg", {"cat"} if i % 2 else {"dog"}) for i in range(8)]
    write_nuswide(tmp_path / "nus", ["cat", "dog"], {"Train": rows})
    assert_partition(_open(tmp_path, kind="nuswide", path="nus/Flickr", annotations="nus", split="Train"))
    classes = {"/m/01yrx": "cat", "/m/0bt9lr": "dog"}
    root = write_openimages(tmp_path / "oi", classes, [(f"{i:04x}", "verification", "/m/01yrx", str(i % 2))
                                                       for i in range(7)])
    assert_partition(_open(tmp_path, kind="openimages", path="oi/validation",
                           annotations=str(root / "oidv7-val-annotations-human-imagelabels.csv"),
                           classes=str(root / "oidv7-class-descriptions-boxable.csv")))

