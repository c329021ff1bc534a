"""Issue 13, replayed: a first build on one's own folder, reruns, refusals, and what they print."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tinydata import jpeg

from builder.cli import main
from builder.errors import RunError, UserError
from builder.publish import layout
from builder.recipe.model import load_recipe
from builder.run.build import Builder


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def add_photos(folder: Path, n: int, start: int = 100) -> None:
    with open(folder / "metadata.jsonl", "a") as meta:
        for i in range(start, start + n):
            (folder / f"new{i}.jpg").write_bytes(jpeg(i))
            meta.write(json.dumps({"file_name": f"new{i}.jpg", "labels": ["cat"]}) + "\n")


def test_simulated_engine_refuses_unlabeled_folder_and_writes_nothing(write_recipe, photo_folder, tmp_path):
    (photo_folder / "metadata.jsonl").unlink()
    recipe = write_recipe()
    code, out = cli("build", str(recipe))
    assert code == 2
    assert out.startswith("error: the simulated engine answers from the source's human labels") and "real engine" in out
    assert len(out.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_rerun_tags_new_items_only_and_says_so(build, write_recipe, photo_folder):
    recipe = write_recipe(output={"samples_per_shard": 100})
    first = build(recipe, ["source.limit=5"])
    assert first.stats["images"] == 5 and first.rerun is None
    second = build(recipe)  # --limit removed: the other 7 are tagged, the 5 come back from the cache
    assert second.stats["images"] == 12
    assert second.rerun == {"new": 7, "kept": 5, "redone": 0}
    add_photos(photo_folder, 3)
    third = build(recipe)
    assert third.stats["images"] == 15 and third.rerun == {"new": 3, "kept": 12, "redone": 0}
    again = build(recipe)
    assert again.sent == 0 and again.rerun == {"new": 0, "kept": 15, "redone": 0} and again.skipped_shards == 1
    code, out = cli("build", str(recipe), "--no-progress")
    assert code == 0 and "items: 0 new, 15 kept from the earlier build, 0 failed before and tried again" in out


def test_rerun_never_reasks_answered_keys(build, write_recipe):
    recipe = write_recipe(output={"samples_per_shard": 100})
    build(recipe, ["source.limit=5"])
    full = build(write_recipe(output={"samples_per_shard": 100}))
    fresh = build(write_recipe(output={"samples_per_shard": 100, "dir": str(recipe.parent / "fresh")}))
    one_shot = build(write_recipe(output={"samples_per_shard": 100, "dir": str(recipe.parent / "five")}),
                     ["source.limit=5"])
    assert full.sent == fresh.sent - one_shot.sent  # only the 7 new items cost requests


def test_source_shrinks_drops_stale_shards(build, write_recipe):
    recipe = write_recipe(output={"samples_per_shard": 5})
    assert build(recipe).shards == 3
    smaller = build(recipe, ["source.limit=6"])
    assert smaller.stats["images"] == 6 and layout.completed_shards(smaller.out) == [0, 1]


def test_changed_recipe_lists_fields_and_commands(build, write_recipe, tmp_path):
    recipe = write_recipe()
    build(recipe)
    with pytest.raises(RunError) as info:
        build(recipe, ["tagging.threshold=0.7"])
    msg = str(info.value)
    assert "(tagging.threshold changed)" in msg and "tagllm relabel" in msg and "--overwrite" in msg
    assert "another --out" in msg
    with pytest.raises(RunError, match=r"engine.simulation.seed, tagging.temperature changed"):
        build(recipe, ["tagging.temperature=0.3", "engine.simulation.seed=3"])


def test_input_error_before_tagging_leaves_no_folder(write_recipe, photo_folder, tmp_path):
    meta = photo_folder / "metadata.jsonl"
    good = meta.read_text()
    meta.write_text(good + "{not json\n")
    recipe = write_recipe()
    code, out = cli("build", str(recipe))
    assert code == 2 and "not valid JSON" in out
    assert not (tmp_path / "out").exists()
    meta.write_text(good)  # fixed: the same command now builds (no 'different recipe')
    code, out = cli("build", str(recipe), "--no-progress")
    assert code == 0, out


def test_label_mismatch_counted_with_example_in_summary_and_inspect(write_recipe, photo_folder):
    lines = (photo_folder / "metadata.jsonl").read_text().splitlines()
    for i in (0, 3):
        row = json.loads(lines[i])
        row["labels"] = ["unicorn"]
        lines[i] = json.dumps(row)
    (photo_folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    recipe = write_recipe()
    code, out = cli("build", str(recipe), "--no-progress")
    assert code == 0
    assert "failed 2 (source 2)" in out
    assert "source 2, e.g. img00: metadata.jsonl: img00.jpg: label 'unicorn' is not in the vocabulary" in out
    assert "labels not in the vocabulary: unicorn (2)" in out
    code, inspect_out = cli("inspect", str(load_recipe(recipe).recipe.output.dir))
    assert "labels not in the vocabulary: unicorn (2)" in inspect_out


def test_progress_total_known_for_folders(write_recipe):
    from builder.sources import open_source

    loaded = load_recipe(write_recipe())
    source = open_source(loaded.recipe.source, loaded.vocab, loaded.base_dir)
    assert source.total() == 12
    source.spec.limit = 5
    assert source.total() == 5


def test_ctrl_c_ends_without_traceback(write_recipe, tmp_path):
    recipe = write_recipe(engine={"kind": "simulated", "concurrency": 2, "simulation": {"latency": 0.3}})
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", str(recipe)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "out" / layout.CACHE).exists():
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted:" in err


def test_saved_recipe_is_relative_and_without_credentials(build, write_recipe, tmp_path):
    recipe = write_recipe(engine={"kind": "simulated", "servers": ["http://user:s3cret@gpu1:30000/v1"]})
    out = build(recipe).out
    text = (out / layout.RECIPE).read_text()
    assert "s3cret" not in text and "user@" not in text and "http://gpu1:30000/v1" in text
    assert str(tmp_path) not in text
    saved = yaml.safe_load(text)
    assert saved["source"]["path"] == os.path.relpath(tmp_path / "photos", out.resolve())
    again = Builder(load_recipe(out / layout.RECIPE), out, progress=False).run()  # still resumes from there
    assert again.sent == 0


def test_missing_file_detail_is_relative(write_recipe, photo_folder, tmp_path):
    with open(photo_folder / "metadata.jsonl", "a") as meta:
        meta.write(json.dumps({"file_name": "gone.jpg", "labels": []}) + "\n")
    out = Builder(load_recipe(write_recipe()), tmp_path / "out", progress=False).run().out
    details = [r.detail for r in layout.iter_records(out) if r.status != "ok"]
    assert details == ["file not found: gone.jpg"]


def test_engines_fail_fast_without_weights(monkeypatch, small_vocab_file):
    from builder.engines.preflight import check_model, hub_reachable
    from builder.engines.registry import engine_from_spec
    from builder.recipe.model import EngineSpec
    from builder.recipe.vocab import load_vocabulary

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(UserError, match="not in the local Hugging Face cache.*HF_HUB_OFFLINE"):
        check_model("Qwen/Qwen2.5-VL-3B-Instruct", "transformers")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: like no network
    assert "not reachable" in hub_reachable()
    vocab = load_vocabulary(small_vocab_file)
    with pytest.raises(UserError, match="cannot be downloaded"):
        engine_from_spec(EngineSpec(kind="transformers", model="Qwen/Qwen2.5-VL-3B-Instruct"), vocab)
    with pytest.raises(UserError, match="model folder not found"):
        check_model("/no/such/model", "transformers")
    assert time.perf_counter() - started < 30  # seconds, not minutes of HEAD retries


def test_recipe_check_opens_source_and_checks_engine_settings(write_recipe, monkeypatch):
    recipe = write_recipe()
    code, out = cli("recipe", "check", str(recipe))
    assert code == 0 and "source: 12 items; first 'img00'" in out and "human labels on 12 of the first 12" in out
    cases = [
        (["--set", "source.path=nowhere"], "source.path: not a folder"),
        (["--set", "source.metadata=none.jsonl"], "source.metadata: file not found"),
        (["--set", "engine.kind=http"], "needs at least one server"),
        (["--set", "engine.kind=http", "--set", "engine.servers=[gpu1:30000]"], "is not an http(s) URL"),
        (["--set", "engine.kind=http", "--set", "engine.servers=[http://gpu1:30000]",
          "--set", "engine.api_key_env=TAGLLM_TEST_UNSET_KEY"], "TAGLLM_TEST_UNSET_KEY is not set"),
    ]
    monkeypatch.delenv("TAGLLM_TEST_UNSET_KEY", raising=False)
    for args, expected in cases:
        code, out = cli("recipe", "check", str(recipe), *args)
        assert code == 2 and expected in out, (args, out)


def test_progress_shows_time_left_only_with_a_total(monkeypatch):
    from rich.progress import TimeRemainingColumn

    from builder.run.progress import Reporter

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    for total, expected in ((12, True), (None, False)):
        reporter = Reporter(total=total, show=True)
        try:
            assert any(isinstance(c, TimeRemainingColumn) for c in reporter._progress.columns) is expected
        finally:
            reporter.close()


def test_missing_engine_package_is_one_line():
    import importlib.util

    from builder.engines.preflight import check_packages

    if importlib.util.find_spec("sglang") is not None:
        pytest.skip("sglang is installed here")
    with pytest.raises(UserError, match=r"engine 'sglang' needs sglang: pip install -e '.\[sglang\]'"):
        check_packages("sglang")


def test_auto_engine_without_sglang_names_the_choices(build, write_recipe):
    import importlib.util

    if importlib.util.find_spec("sglang") is not None:
        pytest.skip("sglang is installed here")
    with pytest.raises(UserError, match=r"engine 'auto' needs sglang and a GPU .* or --engine simulated$"):
        build(write_recipe(engine={"kind": "auto"}))


BLOCKED = ("torch", "torchvision", "torchaudio", "triton", "nvidia", "transformers", "timm", "xgrammar", "sglang")


def site_without_torch(tmp_path: Path) -> Path:
    """A folder that links every installed package except torch and what needs it (a slim install)."""
    import importlib.util

    site = Path(importlib.util.find_spec("datasets").origin).parents[1]
    slim = tmp_path / "site"
    slim.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(BLOCKED) and not entry.name.endswith(".pth"):
            (slim / entry.name).symlink_to(entry)
    return slim


def test_demo_needs_no_torch(tmp_path):
    """`make demo` installs the core package plus the eval extra: the demo must build and evaluate without torch."""
    import tomllib

    repo = Path(__file__).resolve().parents[2]
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    slim = project["dependencies"] + project["optional-dependencies"]["eval"]
    assert not [d for d in slim if d.split("=")[0].split(">")[0].split("<")[0] in ("torch", "torchvision")]
    assert "$(PIP) install -q -e '.[eval]'" in (repo / "Makefile").read_text()
    code = ("import sys; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; from builder.cli import main; "
            "sys.argv[0] = 'tagllm'; main()")
    out = tmp_path / "demo"
    for args in (["build", str(repo / "recipes" / "demo.yaml"), "--out", str(out), "--no-progress"],
                 ["eval", str(out)]):
        done = subprocess.run([sys.executable, "-S", "-c", code, str(site_without_torch(tmp_path) if args[0] == "build"
                               else tmp_path / "site"), str(repo), *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "eval" / "report.json").is_file()


def test_retry_failed_counts_failed_items_as_redone(build, write_recipe, photo_folder):
    from builder.workflows.maintain import retry_failed

    (photo_folder / "img03.jpg").write_bytes(b"")  # fails as 'empty'
    out = build(write_recipe()).out
    (photo_folder / "img03.jpg").write_bytes(jpeg(3))
    result = retry_failed(out)
    assert result.stats["failed"] == 0 and result.rerun == {"new": 0, "kept": 11, "redone": 1}
