"""Faults cost retries, never labels: a build through serve-sim with ~20% faults of every kind gives
every ok item exactly the labels and scores of a fault-free build; and a build where every item
fails exits non-zero and says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from run.test_resilience import labeled_folder

from builder.cli import main
from builder.dev.serve_sim import running_sim_server
from builder.publish import layout
from builder.recipe.model import load_recipe
from builder.run.build import Builder

FAULTS = dict(fault_5xx=0.04, fault_drop=0.03, fault_malformed=0.03, fault_timeout=0.02,
              fault_empty=0.04, fault_violate=0.04, hang_seconds=2.0, seed=5)


def labels_of(recipe: Path, url: str, api: str, out: Path) -> dict[str, tuple]:
    overrides = ["engine.kind=http", f"engine.api={api}", f"engine.servers=[{url}]", "engine.timeout=1",
                 "engine.retries=6", "engine.args={backoff: 0.01}", f"output.dir={out}"]
    loaded = load_recipe(recipe, overrides)
    result = Builder(loaded, out, progress=False).run()
    return {r.key: (r.status, tuple(r.labels), tuple(sorted(r.scores.items())), tuple(r.candidates))
            for r in layout.iter_records(result.out)}


@pytest.mark.parametrize("api", ["openai", "http-sglang"])
def test_faults_do_not_change_labels(api: str, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(source={"kind": "folder", "path": str(labeled_folder(tmp_path / "imgs", 30))})
    with running_sim_server(recipe=recipe) as url:
        clean = labels_of(recipe, url, api, tmp_path / "clean")
    with running_sim_server(recipe=recipe, **FAULTS) as url:
        faulty = labels_of(recipe, url, api, tmp_path / "faulty")
    assert all(v[0] == "ok" for v in clean.values())
    ok = [k for k, v in faulty.items() if v[0] == "ok"]
    assert len(ok) >= 20, faulty
    different = [k for k in ok if faulty[k] != clean[k]]
    assert different == [], f"{len(different)} of {len(ok)} ok items got other labels than without faults"


def test_a_build_where_every_item_fails_exits_non_zero_and_says_why(write_recipe, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(3):
        (folder / f"b{i}.jpg").write_bytes(b"not an image at all")
    recipe = write_recipe(source={"kind": "folder", "path": str(folder)})
    result = CliRunner().invoke(main, ["build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress",
                                       "--set", "engine.simulation.allow_unlabeled=true"])
    assert result.exit_code != 0
    assert "build failed: no item of 3 is ok" in result.output
    assert "decode 3, e.g. b0" in result.output  # the top reason with one example
    assert (tmp_path / "out" / layout.MANIFEST).exists()  # the output stays, resumable
