"""The request cache: O(1) truth test, batched commits that keep answers durable, stable keys, one row per
image and kind of question that still replays each unchanged question."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from builder.ask.asker import Asker
from builder.ask.cache import FORMAT, RequestCache, question_digest, row_key, stored
from builder.engines.base import Request, Result
from builder.engines.simulated import SimulatedEngine
from builder.prompts.constraints import Constraint
from builder.prompts.render import chat


def _rows(path: Path) -> int:
    """Rows another connection sees: what is committed (durable), not what is pending."""
    with sqlite3.connect(str(path)) as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def _answers(path: Path) -> int:
    """Answers in the committed rows (a row holds one image's answers to one kind of question)."""
    with sqlite3.connect(str(path)) as db:
        return sum(len(json.loads(blob)) for (blob,) in db.execute("SELECT result FROM answers"))


def _row(text: str) -> dict:
    return {"q": stored(Result(text=text))}


def test_answers_are_committed_in_batches_and_on_commit(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite", batch=4, max_delay=3600)
    for i in range(6):
        cache.put(f"k{i}", _row(str(i)))
    assert _rows(tmp_path / "c.sqlite") in (0, 4)  # the first batch is with the writer thread; two pending
    assert cache.get("k5") == _row("5")  # pending answers are found before they are committed
    cache.commit()
    assert _rows(tmp_path / "c.sqlite") == 6
    cache.put("k6", _row("6"))
    cache.close()  # close commits what is pending
    assert _rows(tmp_path / "c.sqlite") == 7
    reopened = RequestCache(tmp_path / "c.sqlite", batch=4)
    reopened.put("k7", _row("7"))
    assert reopened.get("k7") == _row("7") and reopened.get("k0") == _row("0")  # pending and committed answers
    reopened.close()


def test_a_sigkill_loses_only_the_uncommitted_batch(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from builder.engines.base import Result\n"
        "from builder.ask.cache import RequestCache, stored\n"
        "cache = RequestCache(sys.argv[1], batch=4, max_delay=3600)\n"
        "for i in range(10):\n"
        "    cache.put(f'k{i}', {'q': stored(Result(text=str(i)))})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    path = tmp_path / "killed.sqlite"
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True)
    assert proc.returncode == -9
    reopened = RequestCache(path)
    try:
        kept = [reopened.get(f"k{i}") is not None for i in range(10)]
        assert reopened.get("k3") == {"q": stored(Result(text="3"))}
    finally:
        reopened.close()
    # k0-k3 were committed before k4-k7 were handed to the writer; k8-k9 were still being collected
    assert kept in ([True] * 4 + [False] * 6, [True] * 8 + [False] * 2)
    assert kept.count(False) <= 2 * 4  # max_loss of a cache with batch=4


def test_a_slow_trickle_of_answers_is_committed_after_max_delay(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite", batch=1000, max_delay=0.0)
    cache.put("a", _row("a"))  # handed to the writer thread at once, without a commit() call
    deadline = time.monotonic() + 10
    while _rows(tmp_path / "c.sqlite") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _rows(tmp_path / "c.sqlite") == 1
    cache.close()


def test_the_asker_never_counts_the_cache(tmp_path: Path) -> None:
    class NoCount(RequestCache):
        def __len__(self) -> int:
            raise AssertionError("COUNT(*) on the hot path")

    request = Request(messages=chat("s", "Is there a cat?"), image=b"img", constraint=Constraint("yesno"),
                      max_tokens=1, logprobs=True)
    answers = []
    for _run in range(2):  # a first run, then a resumed one that replays the answer
        cache = NoCount(tmp_path / "c.sqlite")
        asker = Asker(SimulatedEngine(), cache, "v1")
        answers += asyncio.run(asker.ask([request], lambda r, res: res.text))
        cache.close()
    first, again = answers
    assert not first.cached and again.cached and again.value == first.value


@pytest.mark.parametrize("seed", [None, 3])
def test_keys_are_the_documented_hashes(seed: int | None) -> None:
    """Question digest: sha256 of the request's JSON payload (made once per question or not, the same);
    row key: sha256 of the format, the image digest, the kind of question, the engine and the vocabulary."""
    request = Request(messages=chat("sys", "Which animals?"), image=b"\x01\x02", seed=seed, tag="subset:animal:0",
                      constraint=Constraint("subset", ("cat", "dog")), max_tokens=32, temperature=0.0)
    payload = {"engine": "E", "messages": request.messages, "constraint": request.constraint.key(),
               "max_tokens": 32, "temperature": 0.0, "logprobs": False, "seed": seed, "vocab": "V"}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    assert question_digest(request, "E", "V") == expected
    assert question_digest(request, "E", "V") == expected  # from the memo
    image = hashlib.sha256(b"\x01\x02").hexdigest()
    assert row_key(request, "E", "V", expected) == hashlib.sha256(
        f"{FORMAT}\x1f{image}\x1fsubset\x1fE\x1fV".encode()).hexdigest()
    other = Request(messages=chat("sys", "Which vehicles?"), image=b"\x01\x02", seed=seed, tag="subset:vehicle:0",
                    constraint=Constraint("subset", ("cat", "dog")), max_tokens=32)
    assert question_digest(other, "E", "V") != expected
    assert row_key(other, "E", "V", "x") == row_key(request, "E", "V", expected)  # same image, same kind: one row
    verify = Request(messages=chat("sys", "Is there a cat?"), image=b"\x01\x02", tag="verify:cat",
                     constraint=Constraint("yesno"), max_tokens=1, logprobs=True)
    assert row_key(verify, "E", "V", "x") != row_key(request, "E", "V", expected)


def test_one_row_per_image_replays_unchanged_questions_in_the_same_run(tmp_path: Path) -> None:
    """What calibration relies on: asked again in the same process with one question changed, only
    that question goes to the engine; the image's answers stay in one row."""
    def question(label: str, note: str = "") -> Request:
        return Request(messages=chat("s", f"Is there a {label}?{note}"), image=b"img", tag=f"verify:{label}",
                       constraint=Constraint("yesno"), max_tokens=1, logprobs=True)

    engine = SimulatedEngine()
    cache = RequestCache(tmp_path / "c.sqlite")
    asker = Asker(engine, cache, "v1")
    parse = lambda r, res: res.yes_prob  # noqa: E731
    first = asyncio.run(asker.ask([question("cat"), question("dog")], parse))
    sent = engine.calls
    cache.commit()  # the second ask reads SQLite, not the pending batch
    again = asyncio.run(asker.ask([question("cat"), question("dog", " Not a wolf.")], parse))
    assert engine.calls - sent == 1
    assert again[0].cached and again[0].value == first[0].value and not again[1].cached
    cache.close()
    assert _rows(tmp_path / "c.sqlite") == 1 and _answers(tmp_path / "c.sqlite") == 3


def test_every_answer_of_a_shard_is_durable_before_the_shard_is_renamed(build, monkeypatch) -> None:
    from builder.publish import layout
    from builder.publish.writers.base import Writer

    seen: list[int] = []
    original = Writer.end_shard

    def end_shard(self: Writer) -> Path:
        if self.format == "index":  # once per shard (the index writer is always there)
            seen.append(_answers(self.out / layout.CACHE))
        return original(self)

    monkeypatch.setattr(Writer, "end_shard", end_shard)
    result = build()
    per_shard = [0] * result.shards  # answers each shard's records needed (none came from a cache)
    for shard in range(result.shards):
        for row in pq.read_table(layout.index_path(result.out, shard)).to_pylist():
            per_shard[shard] += json.loads(row["usage"])["requests"]
    needed = [sum(per_shard[: i + 1]) for i in range(len(per_shard))]
    assert needed[-1] > 0 and len(seen) == result.shards
    # committed when a shard is renamed >= its own and earlier shards' answers (a later shard's may be in too)
    assert all(s >= n for s, n in zip(seen, needed)), (seen, needed)
    assert _answers(result.out / layout.CACHE) == needed[-1]
