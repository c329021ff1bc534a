"""Nothing lost: SIGKILL and resume, odd and broken images, engine deaths, bad answers, relabel, retry."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from click.testing import CliRunner
from PIL import Image
from tinydata import SMALL_VOCAB, jpeg

from builder.ask.cache import BATCH
from builder.cli import main
from builder.engines.base import Engine, Request, Result
from builder.publish import layout
from builder.recipe.model import load_recipe
from builder.run.build import Builder
from builder.workflows.maintain import relabel, retry_failed

NAMES = [label["name"] for g in SMALL_VOCAB["groups"] for label in g["labels"]]


def labeled_folder(folder: Path, n: int, seed: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with open(folder / "metadata.jsonl", "w") as meta:
        for i in range(n):
            (folder / f"p{i:03d}.jpg").write_bytes(jpeg(100 + i))
            meta.write(json.dumps({"file_name": f"p{i:03d}.jpg", "labels": rng.sample(NAMES, rng.randrange(4))}) + "\n")
    return folder


def comparable(out: Path) -> dict:
    """What must be identical between an interrupted-and-resumed build and a clean one."""
    records = {r.key: (r.status, r.labels, r.scores, r.candidates, r.reference) for r in layout.iter_records(out)}
    images = {}
    for tar in sorted((out / "webdataset").glob("shard-*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            images[sample["__key__"]] = sample["jpg"]
    hf = []
    for part in sorted((out / "data").glob("*.parquet")):
        hf += pq.read_table(part, columns=["key", "labels", "scores"]).to_pylist()
    return {"records": records, "images": images, "hf": hf}


def test_sigkill_at_random_points_then_resume_is_identical(tmp_path, small_vocab_file):
    folder = labeled_folder(tmp_path / "photos", 40)

    def recipe(name: str, journal: Path) -> Path:
        data = {
            "name": "kill-test", "source": {"kind": "folder", "path": str(folder)},
            "vocabulary": str(small_vocab_file),
            "engine": {"kind": "simulated", "concurrency": 4, "args": {"journal": str(journal)},
                       "simulation": {"latency": 0.01}},
            "output": {"dir": str(tmp_path / name), "samples_per_shard": 6},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def run(path: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "builder", "build", str(path), "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    clean = run(recipe("clean", tmp_path / "clean.journal"))
    assert clean.wait(timeout=240) == 0, clean.stderr.read().decode()

    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    killed_path = recipe("killed", tmp_path / "killed.journal")
    kills = 0
    for _ in range(4):
        proc = run(killed_path)
        # wait until the build is under way (its cache exists), then kill at a random moment
        deadline = time.time() + 60
        while not (tmp_path / "killed" / "cache.sqlite").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    final = run(killed_path)
    assert final.wait(timeout=240) == 0, final.stderr.read().decode()
    assert kills >= 2, f"the build finished before it could be killed enough (seed {seed})"

    assert comparable(tmp_path / "killed") == comparable(tmp_path / "clean"), f"seed {seed}"
    clean_sends = (tmp_path / "clean.journal").read_text().split()
    killed_sends = Counter((tmp_path / "killed.journal").read_text().split())
    # Answers are stored when their image's questions of a kind are all in, and committed in batches
    # (always before their shard): a kill loses at most the uncommitted answers (two batches) and those
    # of the images in the task window (4 here), which the next run asks again. Nothing else is sent twice.
    per_image = max(r.usage["requests"] for r in layout.iter_records(tmp_path / "clean"))
    bound = kills * (2 * BATCH + 4 * per_image)
    resent = sum(n - 1 for n in killed_sends.values())
    assert resent <= bound, f"{resent} answered requests were sent again after {kills} kills (seed {seed})"
    assert set(killed_sends) == set(clean_sends)
    stats = json.loads((tmp_path / "killed" / "stats.json").read_text())
    assert stats["images"] == 40 == stats["ok"]


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    img = Image.new("RGB", (80, 40), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    return buf.getvalue()


def _animated() -> bytes:
    frames = [Image.new("P", (30, 30), i * 40) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def _cmyk() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (40, 30), (0, 120, 200, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def _palette_alpha() -> bytes:
    img = Image.new("P", (30, 30), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return _png(img, transparency=0)


ODD_IMAGES = {
    # file name: (bytes, expected status or failure reason)
    "good.jpg": (jpeg(1), "ok"),
    "truncated.jpg": (jpeg(2, (300, 200))[:400], "decode"),
    "zero.jpg": (b"", "empty"),
    "png_named.jpg": (_png(Image.new("RGB", (20, 20), (0, 200, 0))), "ok"),
    "cmyk.jpg": (_cmyk(), "ok"),
    "sixteen.png": (_png(Image.new("I;16", (40, 30), 40000)), "ok"),
    "palette_alpha.png": (_palette_alpha(), "ok"),
    "animated.gif": (_animated(), "ok"),
    "exif_rotated.jpg": (_exif_rotated(), "ok"),
    "one_pixel.png": (_png(Image.new("RGB", (1, 1))), "ok"),
    "huge.png": (_png(Image.new("L", (700, 700))), "too_large"),
    "not_an_image.png": (b"this is a text file, not a picture\n" * 20, "decode"),
    "bad_header.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "decode"),
    "rgba.png": (_png(Image.new("RGBA", (20, 20), (0, 0, 255, 100))), "ok"),
    "grey_alpha.png": (_png(Image.new("LA", (20, 20), (100, 50))), "ok"),
}


def test_odd_and_broken_images_are_all_accounted_for(tmp_path, small_vocab_file):
    folder = tmp_path / "odd"
    folder.mkdir()
    with open(folder / "metadata.jsonl", "w") as meta:
        for name, (data, _) in ODD_IMAGES.items():
            (folder / name).write_bytes(data)
            meta.write(json.dumps({"file_name": name, "labels": ["cat"]}) + "\n")
        meta.write(json.dumps({"file_name": "gone.jpg", "labels": ["dog"]}) + "\n")  # missing file
    data = {
        "name": "odd", "source": {"kind": "folder", "path": str(folder)}, "vocabulary": str(small_vocab_file),
        "engine": {"kind": "simulated"},
        "output": {"dir": str(tmp_path / "out"), "samples_per_shard": 7, "max_image_pixels": 400_000},
    }
    path = tmp_path / "odd.yaml"
    path.write_text(yaml.safe_dump(data))
    result = Builder(load_recipe(path), tmp_path / "out", progress=False).run()

    expected = {Path(n).stem: e for n, (_, e) in ODD_IMAGES.items()} | {"gone": "missing"}
    got = {r.key.rsplit("_", 1)[0] if r.key.endswith(("_jpg", "_png", "_gif")) else r.key:
           (r.status if r.status == "ok" else r.error) for r in layout.iter_records(result.out)}
    assert got == expected
    s = result.stats
    assert s["images"] == len(expected) == s["ok"] + s["failed"]
    assert s["failed_by_reason"] == dict(Counter(v for v in expected.values() if v != "ok"))
    rotated = next(r for r in layout.iter_records(result.out) if r.key.startswith("exif_rotated"))
    assert (rotated.width, rotated.height) == (40, 80)  # orientation applied before tagging
    failed = [r for r in layout.iter_records(result.out) if r.status == "failed"]
    assert all(r.detail for r in failed)


def test_engine_death_is_restarted_then_recorded(build, write_recipe):
    survives = build(write_recipe("a.yaml", engine={"kind": "simulated", "simulation": {"crash_every": 25}}))
    assert survives.stats["ok"] == 12
    doomed = build(write_recipe("b.yaml", engine={"kind": "simulated", "simulation": {"crash_every": 5}},
                                output={"dir": str(write_recipe().parent / "doomed"), "samples_per_shard": 5}))
    s = doomed.stats
    assert s["images"] == 12 == s["ok"] + s["failed"]
    assert s["failed_by_reason"].get("engine", 0) > 0


class Garbling(Engine):
    """Answers stage-1 requests with text that breaks the constraint `bad_answers` times."""

    name = "garbling"

    def __init__(self, bad_answers: int):
        super().__init__(model="garbling", concurrency=4)
        self.bad_answers = bad_answers
        self.seen: Counter[str] = Counter()

    async def _generate_one(self, request: Request) -> Result:
        if request.constraint.kind == "yesno":
            return Result(text="yes", yes_prob=0.9)
        self.seen[request.tag] += 1
        key = request.tag + str(hash(request.image))
        self.seen[key] += 1
        if self.seen[key] <= self.bad_answers:
            return Result(text='{"labels":["unicorn","cat","cat"]}')
        return Result(text='{"labels":[]}')


def test_answers_that_break_the_constraint_are_retried_then_failed(write_recipe):
    loaded = load_recipe(write_recipe())
    out = Path(loaded.recipe.output.dir)
    ok = Builder(loaded, out, engine=Garbling(bad_answers=1), progress=False).run()
    assert ok.stats["ok"] == 12
    bad = Builder(loaded, out.with_name("bad"), engine=Garbling(bad_answers=10), progress=False).run()
    assert bad.stats["failed_by_reason"] == {"parse": 12}
    record = next(layout.iter_records(bad.out))
    assert "does not fit the constraint" in record.detail


def test_relabel_rethresholds_without_the_engine(build):
    first = build()
    before = {r.key: r for r in layout.iter_records(first.out)}
    result = relabel(first.out, threshold=0.95)
    assert result.sent == 0
    after = {r.key: r for r in layout.iter_records(first.out)}
    assert before.keys() == after.keys()
    for key, r in after.items():
        assert r.scores == before[key].scores
        assert r.labels == [n for n in r.candidates if r.scores[n] >= 0.95]
    assert yaml.safe_load((first.out / "recipe.yaml").read_text())["tagging"]["threshold"] == 0.95
    cli = CliRunner().invoke(main, ["relabel", str(first.out), "--threshold", "0.5"])
    assert cli.exit_code == 0, cli.output
    assert {r.key: r.labels for r in layout.iter_records(first.out)} == {k: r.labels for k, r in before.items()}


def test_retry_failed_sends_only_what_failed(build, write_recipe):
    result = build(write_recipe(engine={"kind": "simulated", "simulation": {"crash_every": 5}}))
    failed = [r for r in layout.iter_records(result.out) if r.status == "failed"]
    assert failed
    retried = retry_failed(result.out, ["engine.simulation.crash_every=0"])
    assert retried.stats["ok"] == 12
    ok_requests = sum(r.usage["requests"] for r in layout.iter_records(retried.out) if r.key in {f.key for f in failed})
    # the requests of the failed images (a failed image may have answered part of them before)
    assert 0 < retried.sent <= ok_requests


def test_resume_into_output_of_another_recipe_is_refused(build, write_recipe):
    result = build()
    recipe = write_recipe("other.yaml", tagging={"threshold": 0.9})
    cli = CliRunner().invoke(main, ["build", str(recipe), "--no-progress"])
    assert cli.exit_code == 1
    assert "different recipe" in cli.output and "--overwrite" in cli.output
    again = CliRunner().invoke(main, ["build", str(recipe), "--no-progress", "--overwrite"])
    assert again.exit_code == 0, again.output
    assert result.out.is_dir()


def test_rerun_of_a_complete_build_sends_nothing(build, write_recipe):
    recipe = write_recipe()
    build(recipe)
    again = build(recipe)
    assert again.sent == 0 and again.skipped_shards == 3


def test_nonempty_foreign_folder_is_refused(write_recipe, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    cli = CliRunner().invoke(main, ["build", str(write_recipe()), "--no-progress"])
    assert cli.exit_code == 1 and "not a tagllm output" in cli.output
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="posix only")
def test_no_temp_files_left_after_a_build(build):
    result = build()
    leftovers = [p for p in result.out.rglob(".*") if p.is_file()]
    assert leftovers == []


@pytest.mark.parametrize("api", ["openai", "http-sglang"])
def test_build_against_serve_sim_with_20_percent_faults(api, write_recipe, tmp_path, monkeypatch):
    """Every fault kind at once, about 20% of requests in all: the build completes, all items accounted for."""
    import httpx

    from builder.dev.serve_sim import running_sim_server

    secret = "sk-test-SECRET-4242"
    monkeypatch.setenv("TAGLLM_TEST_KEY", secret)
    recipe = write_recipe(source={"kind": "folder", "path": str(labeled_folder(tmp_path / "many", 40))})
    faults = dict(fault_5xx=0.05, fault_drop=0.03, fault_malformed=0.03, fault_timeout=0.03,
                  fault_empty=0.03, fault_violate=0.03, hang_seconds=2.0, seed=11)
    with running_sim_server(recipe=recipe, api_key=secret, **faults) as url:
        overrides = ["engine.kind=http", f"engine.api={api}", f"engine.servers=[{url}]", "engine.timeout=1",
                     "engine.api_key_env=TAGLLM_TEST_KEY", "engine.args={backoff: 0.01}"]
        loaded = load_recipe(recipe, overrides)
        result = Builder(loaded, Path(loaded.recipe.output.dir), progress=False).run()
        served = httpx.get(f"{url}/stats").json()
    s = result.stats
    assert s["images"] == 40 == s["ok"] + s["failed"]
    assert len(list(layout.iter_records(result.out))) == 40
    assert set(served["faults"]) == {"5xx", "drop", "malformed", "timeout", "empty", "violate"}
    assert sum(served["faults"].values()) >= 0.1 * served["generation_requests"]
    assert result.simulated  # the http engine noticed it talks to serve-sim
    assert "SIMULATED" in (result.out / "README.md").read_text()
    for path in result.out.rglob("*"):  # the key never lands in any file of the output
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_failed_items_can_be_kept_in_the_training_files(tmp_path, small_vocab_file):
    import webdataset as wds
    from datasets import load_dataset

    folder = labeled_folder(tmp_path / "p", 4)
    (folder / "p001.jpg").write_bytes(b"")  # one empty file
    data = {"name": "keep", "source": {"kind": "folder", "path": str(folder)}, "vocabulary": str(small_vocab_file),
            "engine": {"kind": "simulated"}, "output": {"dir": str(tmp_path / "out"), "include_failed": True}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    out = Builder(load_recipe(tmp_path / "r.yaml"), tmp_path / "out", progress=False).run().out
    samples = list(wds.WebDataset(str(out / "webdataset/shard-00000.tar"), shardshuffle=False))
    assert len(samples) == 4
    failed = [json.loads(s["json"]) for s in samples if json.loads(s["json"])["status"] == "failed"]
    assert [(r["key"], r["error"]) for r in failed] == [("p001", "empty")]
    ds = load_dataset(str(out), split="train", cache_dir=str(out.parent / "hf-cache"))
    assert sorted(ds["status"]) == ["failed", "ok", "ok", "ok"]
