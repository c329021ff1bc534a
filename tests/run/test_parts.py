"""Static partitioning: `--part I/N` processes plus `tagllm finalize` give the one-process output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from run.test_resilience import comparable, labeled_folder

from builder.cli import main
from builder.publish import layout


@pytest.fixture
def recipe(tmp_path: Path, small_vocab_file: Path):
    folder = labeled_folder(tmp_path / "photos", 23)

    def write(name: str) -> Path:
        data = {"name": "parts", "source": {"kind": "folder", "path": str(folder)},
                "vocabulary": str(small_vocab_file), "engine": {"kind": "simulated", "concurrency": 8},
                "output": {"dir": str(tmp_path / name), "samples_per_shard": 4}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "builder", *args, "--no-progress"] if args[0] == "build"
                            else [sys.executable, "-m", "builder", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_parts_in_two_processes_then_finalize_equal_one_process(recipe, tmp_path: Path) -> None:
    one = CliRunner().invoke(main, ["build", str(recipe("one")), "--no-progress"])
    assert one.exit_code == 0, one.output
    split = recipe("split")
    procs = [cli("build", str(split), "--part", f"{i}/2") for i in range(2)]  # started together
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert "tagllm finalize" in out
    # before finalize: every shard is committed, by the part that owns it, and no card yet
    assert layout.completed_shards(tmp_path / "split") == list(range(6))
    assert not (tmp_path / "split" / "README.md").exists()
    marks = {p.name: json.loads(p.read_text()) for p in (tmp_path / "split" / "parts").iterdir()}
    assert marks["part-00000-of-00002.json"]["shards"] == [0, 2, 4]
    assert marks["part-00001-of-00002.json"]["shards"] == [1, 3, 5]
    fin = CliRunner().invoke(main, ["finalize", str(tmp_path / "split")])
    assert fin.exit_code == 0, fin.output
    assert comparable(tmp_path / "split") == comparable(tmp_path / "one")
    a, b = (json.loads((tmp_path / d / "stats.json").read_text()) for d in ("split", "one"))
    for key in ("images", "ok", "failed", "requests", "sent", "label_counts", "pair_counts"):
        assert a[key] == b[key], key
    assert sorted(p.name for p in (tmp_path / "split" / "data").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one" / "data").iterdir())
    assert not (tmp_path / "split" / "caches").exists()  # folded into cache.sqlite
    assert json.loads((tmp_path / "split" / "manifest.json").read_text())["status"] == "complete"
    relabel = CliRunner().invoke(main, ["relabel", str(tmp_path / "split"), "--threshold", "0.5"])
    assert relabel.exit_code == 0 and "sent this run 0" in relabel.output, relabel.output


def test_finalize_names_missing_shards_and_their_part(recipe, tmp_path: Path) -> None:
    split = recipe("split")
    first = CliRunner().invoke(main, ["build", str(split), "--part", "1/3", "--no-progress"])
    assert first.exit_code == 0, first.output
    assert layout.completed_shards(tmp_path / "split") == [1, 4]
    fin = CliRunner().invoke(main, ["finalize", str(tmp_path / "split")])
    assert fin.exit_code != 0
    line = fin.output.strip()
    assert "4 of 6 shards are not complete: 0, 2, 3, 5 (parts 0/3, 2/3)" in line, line
    assert len(line.splitlines()) == 1
    again = CliRunner().invoke(main, ["build", str(split), "--part", "1/3", "--no-progress"])
    assert again.exit_code == 0 and "sent this run 0" in again.output, again.output  # a rerun part resumes


def test_part_option_errors(recipe) -> None:
    split = recipe("split")
    for args, msg in ((["--part", "2/2"], "0 <= I < N"), (["--part", "x"], "expected I/N"),
                      (["--part", "0/2", "--overwrite"], "cannot be combined with --overwrite"),
                      (["--workers", "2"], "need --runner ray")):
        result = CliRunner().invoke(main, ["build", str(split), *args])
        assert result.exit_code != 0 and msg in result.output, (args, result.output)


def test_finalize_drops_shards_past_a_shortened_source(recipe, tmp_path: Path) -> None:
    """Parts rerun over a shorter source (--limit) keep their shards; finalize drops the ones past its end,
    as one process does, so the folder equals a one-process build of the shorter source."""
    split = recipe("split")
    for args in (["--part", "0/2"], ["--part", "1/2"], ["--part", "0/2", "--limit", "16"],
                 ["--part", "1/2", "--limit", "16"]):
        result = CliRunner().invoke(main, ["build", str(split), *args, "--no-progress"])
        assert result.exit_code == 0, result.output
    assert layout.completed_shards(tmp_path / "split") == list(range(6))  # 23 items in shards of 4, before
    fin = CliRunner().invoke(main, ["finalize", str(tmp_path / "split")])
    assert fin.exit_code == 0, fin.output
    one = CliRunner().invoke(main, ["build", str(recipe("one")), "--limit", "16", "--no-progress"])
    assert one.exit_code == 0, one.output
    assert layout.completed_shards(tmp_path / "split") == list(range(4))
    assert comparable(tmp_path / "split") == comparable(tmp_path / "one")
    assert json.loads((tmp_path / "split" / "stats.json").read_text())["images"] == 16
