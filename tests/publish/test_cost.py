"""Cost from the original answers: replays (relabel, resume) report what the labels cost; prices are the user's."""

from __future__ import annotations

import pytest

from builder.publish import layout
from builder.publish.cost import NO_PRICE, cost_report
from builder.workflows.maintain import relabel


def test_relabel_and_resume_keep_the_original_cost(write_recipe, build, tmp_path) -> None:
    recipe = write_recipe(engine={"kind": "simulated", "concurrency": 8, "simulation": {"latency": 0.02}},
                          cost={"gpus": 2})
    first = build(recipe)
    out = first.out
    before = first.stats["cost"]
    assert before["gpu_seconds_basis"].startswith("engine busy time") and before["replayed_requests"] == 0
    assert before["gpu_seconds_per_image"] > 0 and before["replayed_gpu_seconds_share"] == 0.0
    records = list(layout.iter_records(out))
    assert all(r.usage["gpu_seconds"] > 0 and r.usage["unmeasured"] == 0 for r in records if r.status == "ok")

    for shard in layout.completed_shards(out):  # as after a crash: every shard reopened, answers cached
        layout.shard_stats_path(out, shard).unlink()
    resumed = build(recipe)
    assert resumed.sent == 0
    assert resumed.stats["cost"]["gpu_seconds_per_image"] == before["gpu_seconds_per_image"]
    after = relabel(out, threshold=0.7).stats["cost"]  # zero engine calls
    assert after["gpu_seconds_per_image"] == before["gpu_seconds_per_image"]
    assert after["replayed_gpu_seconds_share"] == 1.0 and after["replayed_requests"] == first.stats["requests"]
    assert after["this_run_gpu_seconds_per_image"] < before["gpu_seconds_per_image"]

    card = (out / layout.CARD).read_text()
    assert "Replayed from the request cache" in card and "counted at their original cost" in card


def test_prices_come_from_the_user() -> None:
    stats = {"images": 10, "requests": 100, "gpu_seconds": 5.0, "wall_seconds": 3.0, "unmeasured": 0}
    none = cost_report(stats, None, None, gpus=1)
    assert none["usd_per_1k_images"] is None and none["human_to_machine_ratio"] is None
    assert none["notes"]["prices"] == NO_PRICE
    priced = cost_report(stats, 3.6, 0.05, gpus=1)
    assert priced["usd_per_1k_images"] == pytest.approx(0.5 * 1000 * 3.6 / 3600)
    assert priced["human_usd_per_1k_images"] == 50.0
    assert priced["human_to_machine_ratio"] == pytest.approx(100.0)
    # answers cached before costs were recorded: fall back to this run's wall time, and say so
    old = cost_report({**stats, "unmeasured": 4}, None, None, gpus=2)
    assert old["gpu_seconds_per_image"] == pytest.approx(0.6) and old["gpu_seconds_basis"].startswith("wall")


def test_recipe_has_no_default_price(write_recipe) -> None:
    from builder.recipe.model import load_recipe

    cost = load_recipe(write_recipe()).recipe.cost
    assert cost.gpu_price_per_hour is None and cost.human_price_per_image is None
