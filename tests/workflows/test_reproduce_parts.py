"""The reproduction's parts that need no build: options, recipe overrides, the table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from builder.errors import UserError
from builder.workflows.reproduce import BENCHMARKS, _train_overrides, make_config, write_test_recipe
from builder.workflows.reproduce_table import SIMULATED_HEAD, render_table

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _result(simulated: bool) -> dict:
    quality = {"images": 10, "CP": 0.9, "CR": 0.8, "CF1": 0.847, "OP": 0.91, "OR": 0.82, "OF1": 0.863, "mAP": 0.88}
    arm = {"train_images": 10, "test_images": 5}
    cost = {"requests_per_image": 13.2, "prompt_tokens_per_image": 4000, "cached_tokens_per_image": 3500,
            "completion_tokens_per_image": 40, "gpu_seconds_per_image": 0.1, "usd_per_1k_images": 0.0694,
            "gpu_price_per_hour": 2.5}
    return {"dataset": "coco", "simulated": simulated, "baseline": "yes-no",
            "engine": {"engine": "sglang", "model": "Qwen/Qwen2.5-VL-7B-Instruct"},
            "classifier": {"backbone": "resnet50", "pretrained": True, "epochs": 20, "batch_size": 64, "lr": 0.001,
                           "image_size": 224, "seed": 0},
            "label_quality": {"tagllm": quality, "baseline": {**quality, "mAP": None}},
            "downstream": {"human": {**arm, "mAP": 0.8}, "tagllm": {**arm, "mAP": 0.79}, "baseline": {**arm, "mAP": 0.7}},
            "mAP_ratio": 0.9875, "gap_closed": 0.9, "cost": {"tagllm": cost, "baseline": {**cost, "requests_per_image": 80}}}


def test_table_rows_and_simulated_label() -> None:
    real = render_table(_result(False))
    assert SIMULATED_HEAD not in real
    assert "| tagllm | 10 | 0.900 | 0.800 | 0.847 | 0.910 | 0.820 | 0.863 | 0.880 |" in real
    assert "| yes-no | 10 | 0.900 | 0.800 | 0.847 | 0.910 | 0.820 | 0.863 | - |" in real
    assert "| yes-no labels | 10 | 5 | 0.700 |" in real
    assert "mAP ratio (tagllm / human): 0.988" in real and "gap closed over yes-no: 0.900" in real
    assert "| tagllm | 13.2 | 4000 | 3500 | 40.0 | 0.1000 | 0.0694 |" in real
    assert "$ at 2.5 USD per GPU-hour" in real
    assert render_table(_result(True)).count(SIMULATED_HEAD) == 2
    unpriced = _result(False)
    unpriced["cost"]["tagllm"].update(gpu_price_per_hour=None, usd_per_1k_images=None)
    text = render_table(unpriced)
    assert "| tagllm | 13.2 | 4000 | 3500 | 40.0 | 0.1000 | - |" in text and "no $ figure" in text


def test_options_are_validated() -> None:
    with pytest.raises(UserError, match="reproduce: baseline"):
        make_config(baseline="open-ended")
    with pytest.raises(UserError, match="reproduce: dataset"):
        make_config(dataset="imagenet")


def test_data_root_points_both_splits_at_the_official_layout(tmp_path: Path) -> None:
    cfg = make_config(dataset="objects365", data=tmp_path, model="M", limit=5, recipes=RECIPES, test_limit=3)
    sets = _train_overrides(cfg, BENCHMARKS["objects365"], "all-in-one", tmp_path / "o")
    assert f"source.path={tmp_path / 'train'}" in sets and "engine.model=M" in sets and "source.limit=5" in sets
    assert f"source.annotations={tmp_path / 'annotations' / 'zhiyuan_objv2_train.json'}" in sets
    test = yaml.safe_load(write_test_recipe(cfg, tmp_path / "t.yaml").read_text())
    assert test["source"]["path"] == str(tmp_path / "val") and test["source"]["limit"] == 3
    assert test["source"]["path_tail"] == 2 and len(test["vocabulary"]["groups"]) == 17
