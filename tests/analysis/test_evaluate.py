"""Label evaluation: numbers against a hand-checked case and scikit-learn, tuning, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

from builder.analysis.evaluate import SIMULATED_NOTICE, evaluate, run_eval, write_thresholds
from builder.dev.synthetic import make_synthetic, write_output
from builder.errors import UserError
from builder.recipe.model import recipe_from_data
from builder.recipe.vocab import Vocabulary
from builder.records import Record

TINY = Vocabulary.model_validate({"name": "tiny", "groups": [
    {"name": "g1", "labels": [{"name": "a"}, {"name": "b"}]},
    {"name": "g2", "labels": [{"name": "c"}, {"name": "d"}]},
]})


def rec(key: str, labels: list[str], reference: list[str] | None, scores: dict[str, float] | None = None,
        status: str = "ok", simulated: bool = False) -> Record:
    return Record(key=key, status=status, labels=labels, scores=scores or {}, candidates=sorted(scores or {}),
                  reference=reference, simulated=simulated, ext="png", error=None if status == "ok" else "decode")


def hand_case(tmp_path: Path, simulated: bool = False) -> Path:
    """4 evaluated images, 1 failed, 1 without human labels. Expected values worked out by hand:

    a: TP 2 FP 0 FN 0 -> P 1, R 1     b: TP 0 FP 1 FN 1 -> P 0, R 0     c: TP 1 FP 1 FN 0 -> P .5, R 1
    d: no positives, never predicted -> skipped.
    CP = 1.5/3 = .5, CR = 2/3, CF1 = 2·.5·(2/3)/(.5+2/3) = 4/7; OP = 3/5, OR = 3/4, OF1 = 2/3.
    AP: a = 1; b: its positive (img1) has score 0, tied with 2 negatives, below 1 negative (.6) -> 1/4;
    c = 1 (positive .7 above negative .55). mAP = 2.25/3 = .75.
    """
    records = [
        rec("img1", ["a"], ["a", "b"], {"a": 0.9}, simulated=simulated),
        rec("img2", ["a", "b"], ["a"], {"a": 0.8, "b": 0.6}, simulated=simulated),
        rec("img3", ["c"], ["c"], {"c": 0.7}, simulated=simulated),
        rec("img4", ["c"], [], {"c": 0.55}, simulated=simulated),
        rec("bad", [], ["a"], status="failed", simulated=simulated),
        rec("unlabeled", ["a"], None, {"a": 0.9}, simulated=simulated),
    ]
    return write_output(tmp_path / "out", records, TINY)


def test_hand_checked_case(tmp_path: Path) -> None:
    result = evaluate(hand_case(tmp_path))
    o = result["overall"]
    assert o["CP"] == pytest.approx(0.5, abs=1e-4)
    assert o["CR"] == pytest.approx(2 / 3, abs=1e-4)
    assert o["CF1"] == pytest.approx(4 / 7, abs=1e-4)
    assert o["OP"] == pytest.approx(0.6, abs=1e-4)
    assert o["OR"] == pytest.approx(0.75, abs=1e-4)
    assert o["OF1"] == pytest.approx(2 / 3, abs=1e-4)
    assert o["mAP"] == pytest.approx(0.75, abs=1e-4)
    assert o["classes_evaluated"] == 3 and o["classes_without_positives"] == 1
    assert result["classes_without_positives"] == ["d"]
    assert result["counts"] == {"records": 6, "evaluated": 4, "failed": 1, "no_reference": 1,
                                "reference_not_in_output": 0}
    rows = {r["label"]: r for r in result["per_class"]}
    assert (rows["b"]["tp"], rows["b"]["fp"], rows["b"]["fn"]) == (0, 1, 1)
    assert rows["c"]["precision"] == 0.5 and rows["c"]["recall"] == 1.0
    assert rows["b"]["ap"] == 0.25 and rows["d"]["ap"] is None
    assert result["simulated"] is False and result["notice"] is None
    # co-occurrence: a and b together once in the human labels (img1), once in the machine labels (img2)
    names = result["labels"]
    assert result["cooccurrence"]["human"][names.index("a")][names.index("b")] == 1
    assert result["cooccurrence"]["machine"][names.index("a")][names.index("a")] == 2


def random_output(tmp_path: Path, n: int = 300, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    names = TINY.names
    truth = rng.random((n, len(names))) < [0.3, 0.1, 0.5, 0.05]
    # candidates: most positives and some negatives get a score; the rest score 0 (absent)
    candidate = np.where(truth, rng.random(truth.shape) < 0.9, rng.random(truth.shape) < 0.3)
    scores = np.where(candidate, np.clip(rng.normal(np.where(truth, 0.65, 0.4), 0.2), 0.01, 1.0), 0.0).round(6)
    pred = scores >= 0.5
    records = [
        rec(f"k{i}", [names[c] for c in np.flatnonzero(pred[i])], [names[c] for c in np.flatnonzero(truth[i])],
            {names[c]: float(scores[i, c]) for c in np.flatnonzero(candidate[i])})
        for i in range(n)
    ]
    return write_output(tmp_path / "rand", records, TINY, samples_per_shard=128), truth, pred, scores


def test_matches_scikit_learn_on_random_data(tmp_path: Path) -> None:
    out, truth, pred, scores = random_output(tmp_path)
    result = evaluate(out)
    o = result["overall"]
    op, orc, of1, _ = precision_recall_fscore_support(truth, pred, average="micro", zero_division=0)
    assert (o["OP"], o["OR"], o["OF1"]) == pytest.approx((op, orc, of1), abs=1e-4)
    pos = np.flatnonzero(truth.any(0))
    cp, cr, _, _ = precision_recall_fscore_support(truth, pred, labels=pos, average="macro", zero_division=0)
    assert (o["CP"], o["CR"]) == pytest.approx((cp, cr), abs=1e-4)
    assert o["CF1"] == pytest.approx(2 * cp * cr / (cp + cr), abs=1e-4)
    assert o["mAP"] == pytest.approx(average_precision_score(truth[:, pos], scores[:, pos], average="macro"), abs=1e-4)
    # the sweep at 0.5 is the build's own labels again
    row = next(r for r in result["sweep"] if r["threshold"] == 0.5)
    assert row["OF1"] == pytest.approx(of1, abs=1e-4)
    for r in result["sweep"]:
        assert r["OF1"] == pytest.approx(f1_score(truth, scores >= r["threshold"], average="micro"), abs=1e-4)


def test_tuning_finds_thresholds_away_from_half(tmp_path: Path) -> None:
    """Class a's positives score ~0.3 and its negatives ~0.1: 0.5 misses all of them, ~0.2 gets them."""
    rng = np.random.default_rng(1)
    records = []
    for i in range(200):
        pos = i % 3 == 0
        s = float(np.clip(rng.normal(0.3 if pos else 0.1, 0.03), 0.01, 0.99))
        c_pos = i % 2 == 0
        sc = float(np.clip(rng.normal(0.8 if c_pos else 0.3, 0.05), 0.01, 0.99))
        scores = {"a": s, "c": sc}
        labels = [n for n, v in scores.items() if v >= 0.5]
        records.append(rec(f"k{i}", labels, (["a"] if pos else []) + (["c"] if c_pos else []), scores))
    out = write_output(tmp_path / "out", records, TINY)
    result = run_eval(out, tune=True)
    rows = {r["label"]: r for r in result["per_class"]}
    assert rows["a"]["f1"] == 0.0
    assert 0.12 < rows["a"]["threshold_tuned"] < 0.28
    assert rows["a"]["f1_tuned"] > 0.95
    assert rows["c"]["f1_tuned"] >= rows["c"]["f1"]
    assert rows["b"]["threshold_tuned"] == result["best_global"]["threshold"]  # no positives: global
    t = result["tuned"]
    assert t["dev_images"] == 100 and t["held_out_images"] == 100 and len(t["dev_keys"]) == 100
    assert t["CF1"] == t["held_out"]["CF1"] > t["held_out_as_built"]["CF1"]  # measured on held-out images
    # the thresholds file is one a recipe accepts; re-thresholding with it gives the tuned figures on the
    # images it was not tuned on, and the evaluation says which images it was tuned on
    path = Path(result["written"]["thresholds"])
    assert path == out / "eval" / "thresholds.yaml"
    loaded = recipe_from_data({"name": "x", "source": {"kind": "folder", "path": "."},
                               "vocabulary": TINY.model_dump(), "tagging": {"thresholds_file": str(path)}},
                              "test", tmp_path)
    assert loaded.threshold("a") == rows["a"]["threshold_tuned"]
    again = evaluate(out, thresholds=path)
    assert again["tuned_on"]["overlap"] == 100 and again["tuned_on"]["others"] == 100
    assert again["tuned_on"]["overall_others"]["OF1"] == pytest.approx(t["OF1"], abs=1e-4)
    assert again["thresholds_used"] == "per label"
    assert evaluate(out, thresholds=0.2)["thresholds_used"] == 0.2
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        evaluate(out, thresholds=1.5)
    with pytest.raises(UserError, match="not labels of the vocabulary"):
        evaluate(out, thresholds={"zebra": 0.3})


def test_report_files_and_simulated_notice(tmp_path: Path) -> None:
    out = hand_case(tmp_path, simulated=True)
    run_eval(out, tune=True)
    folder = out / "eval"
    for name in ("report.json", "report.md", "pr_curves.png", "per_class_f1.png", "label_frequency.png",
                 "cooccurrence.png", "thresholds.yaml"):
        assert (folder / name).is_file(), name
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (folder / "report.md").read_text()
    assert "SIMULATED" in md.splitlines()[2] and SIMULATED_NOTICE in md
    assert "not a measure of model quality" in md
    assert "| a | g1 |" in md and "![pr_curves](pr_curves.png)" in md
    data = json.loads((folder / "report.json").read_text())
    assert data["simulated"] is True and data["notice"] == SIMULATED_NOTICE
    assert data["overall"]["mAP"] == 0.75
    assert "SIMULATED" in (folder / "thresholds.yaml").read_text()


def test_records_without_scores(tmp_path: Path) -> None:
    records = [rec("1", ["a"], ["a"]), rec("2", ["c"], ["a", "c"])]
    result = run_eval(write_output(tmp_path / "out", records, TINY), report_dir=tmp_path / "rep")
    assert result["has_scores"] is False and result["overall"]["mAP"] is None
    assert "sweep" not in result and not (tmp_path / "rep" / "pr_curves.png").exists()
    assert "No stage-2 scores" in (tmp_path / "rep" / "report.md").read_text()
    with pytest.raises(UserError, match="nothing to tune"):
        write_thresholds(result, tmp_path / "t.yaml")


def test_reference_from_folder_and_other_output(tmp_path: Path) -> None:
    """Human labels given separately: an image folder with metadata.jsonl, or another output, by key."""
    from builder.analysis.evaluate import source_items
    from builder.dev.synthetic import synthetic_vocabulary

    syn = make_synthetic(tmp_path / "syn", n=30, n_test=5, seed=3)
    vocab = synthetic_vocabulary()
    items = list(source_items(syn.train, vocab))
    truth = {i.key: i.reference for i in items}
    # a build of the same folder whose records carry no human labels; labels miss one label per image
    records = [rec(i.key, i.reference[1:], None) for i in items]
    out = write_output(tmp_path / "out", records, vocab)
    with pytest.raises(UserError, match="--reference"):
        evaluate(out)
    by_folder = evaluate(out, reference=syn.train)
    assert by_folder["images"] == 30 and by_folder["counts"]["no_reference"] == 0
    expected_tp = sum(len(v) - 1 for v in truth.values() if v)
    assert sum(r["tp"] for r in by_folder["per_class"]) == expected_tp
    assert by_folder["overall"]["OP"] == 1.0
    other = write_output(tmp_path / "other", [rec(k, [], v) for k, v in truth.items()], vocab)
    by_output = evaluate(out, reference=other)
    assert by_output["overall"] == by_folder["overall"]
    by_recipe = evaluate(out, reference=syn.recipe)
    assert by_recipe["overall"] == by_folder["overall"]
    with pytest.raises(UserError):
        evaluate(out, reference=tmp_path / "nowhere")


def test_not_an_output(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a tagllm output"):
        evaluate(tmp_path)


def test_reference_with_other_images_under_the_same_keys_is_warned(tmp_path: Path) -> None:
    from PIL import Image

    from builder.analysis.report import warnings
    from builder.dev.synthetic import png_bytes

    def image(i: int, shade: int) -> bytes:
        return png_bytes(Image.new("RGB", (8, 8), (i * 20, shade, 0)))

    keys = [f"k{i}" for i in range(6)]
    ours = write_output(tmp_path / "ours", [rec(k, ["a"], ["a"], {"a": 0.9}) for k in keys], TINY,
                        images={k: image(i, 0) for i, k in enumerate(keys)})
    same = write_output(tmp_path / "same", [rec(k, [], ["a"]) for k in keys], TINY,
                        images={k: image(i, 0) for i, k in enumerate(keys)})
    other = write_output(tmp_path / "other", [rec(k, [], ["a"]) for k in keys], TINY,
                         images={k: image(i, 255) for i, k in enumerate(keys)})
    assert evaluate(ours, reference=same)["image_check"]["key_matches_other_image"] == 0
    result = run_eval(ours, reference=other, report_dir=tmp_path / "rep", plots=False)
    assert result["image_check"]["key_matches_other_image"] == 6 and result["image_check"]["same_images"] == 0
    assert any("different bytes" in w for w in warnings(result))
    assert "**Warning:** 6 of 6 keys matched a reference image with different bytes" in (
        tmp_path / "rep" / "report.md").read_text()


def test_binary_scores_are_flagged_and_conventions_stated(tmp_path: Path) -> None:
    records = [rec("1", ["a"], ["a"], {"a": 1.0, "c": 0.0}), rec("2", ["c"], ["a", "c"], {"c": 1.0}),
               rec("3", [], ["c"], {"a": 0.0})]
    result = run_eval(write_output(tmp_path / "out", records, TINY), report_dir=tmp_path / "rep", plots=False)
    assert result["binary_scores"] and result["overall"]["mAP_from_binary_scores"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "(0/1 scores)" in md and "no logprobs" in md
    assert "never a candidate has score 0" in md and "classes without positives are skipped" in md
    assert not evaluate(hand_case(tmp_path / "h"))["binary_scores"]


def test_thresholds_tuned_on_the_evaluated_images_are_called_out(build, write_recipe, tmp_path: Path) -> None:
    """eval --tune, relabel with its file, eval again: the report and the card name the dev images and
    give the figures without them."""
    from builder.publish import layout
    from builder.workflows.maintain import relabel

    out = build(write_recipe()).out
    tuned = run_eval(out, tune=True, tune_dev=6, plots=False)
    assert tuned["tuned"]["dev_images"] == 6 and tuned["tuned"]["held_out_images"] == 6
    relabel(out, thresholds_file=Path(tuned["written"]["thresholds"]))
    again = run_eval(out, plots=False)
    t = again["tuned_on"]
    assert t["overlap"] == 6 and t["others"] == 6 and t["by"] == ["thresholds file thresholds.yaml from tagllm eval --tune"]
    assert t["overall_others"]["OF1"] == pytest.approx(tuned["tuned"]["held_out"]["OF1"], abs=1e-4)
    from builder.publish.card import write_card

    card = write_card(out).read_text()
    assert "Per-label thresholds tuned by `tagllm eval --tune` on 6 dev images" in card
    assert "were tuned on 6 of these images" in card and "quote these" in card
    assert "tuned on 6 of these images" in (out / "eval" / "report.md").read_text()
    assert (out / layout.CARD).is_file()
