"""The request cache: O(1) truth test, batched commits that keep answers durable, stable keys."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.engines.base import Request, Result
from builder.engines.simulated import SimulatedEngine
from builder.prompts.constraints import Constraint
from builder.prompts.render import chat
from builder.run.asker import Asker
from builder.run.cache import RequestCache, request_key


def _rows(path: Path) -> int:
    """Rows another connection sees: what is committed (durable), not what is pending."""
    with sqlite3.connect(str(path)) as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def test_answers_are_committed_in_batches_and_on_commit(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite", batch=4, max_delay=3600)
    for i in range(6):
        cache.put(f"k{i}", Result(text=str(i)))
    assert _rows(tmp_path / "c.sqlite") in (0, 4)  # the first batch is with the writer thread; two pending
    assert cache.get("k5") is None  # a new cache is empty at open: nothing to look up in this run
    cache.commit()
    assert _rows(tmp_path / "c.sqlite") == 6
    cache.put("k6", Result(text="6"))
    cache.close()  # close commits what is pending
    assert _rows(tmp_path / "c.sqlite") == 7
    reopened = RequestCache(tmp_path / "c.sqlite", batch=4)
    reopened.put("k7", Result(text="7"))
    assert reopened.get("k7").text == "7" and reopened.get("k0").text == "0"  # pending and committed answers
    reopened.close()


def test_a_sigkill_loses_only_the_uncommitted_batch(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from builder.engines.base import Result\n"
        "from builder.run.cache import RequestCache\n"
        "cache = RequestCache(sys.argv[1], batch=4, max_delay=3600)\n"
        "for i in range(10):\n"
        "    cache.put(f'k{i}', Result(text=str(i)))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    path = tmp_path / "killed.sqlite"
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True)
    assert proc.returncode == -9
    reopened = RequestCache(path)
    try:
        kept = [reopened.get(f"k{i}") is not None for i in range(10)]
        assert reopened.get("k3").text == "3"
    finally:
        reopened.close()
    # k0-k3 were committed before k4-k7 were handed to the writer; k8-k9 were still being collected
    assert kept in ([True] * 4 + [False] * 6, [True] * 8 + [False] * 2)
    assert kept.count(False) <= 2 * 4  # max_loss of a cache with batch=4


def test_a_slow_trickle_of_answers_is_committed_after_max_delay(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite", batch=1000, max_delay=0.0)
    cache.put("a", Result(text="a"))  # handed to the writer thread at once, without a commit() call
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
def test_keys_are_the_documented_hash(seed: int | None) -> None:
    """Made once per question or not, the key is sha256(image digest + the request's JSON payload)."""
    request = Request(messages=chat("sys", "Which animals?"), image=b"\x01\x02", seed=seed,
                      constraint=Constraint("subset", ("cat", "dog")), max_tokens=32, temperature=0.0)
    payload = {"engine": "E", "messages": request.messages, "constraint": request.constraint.key(),
               "max_tokens": 32, "temperature": 0.0, "logprobs": False, "seed": seed, "vocab": "V"}
    expected = hashlib.sha256(hashlib.sha256(b"\x01\x02").hexdigest().encode()
                              + json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert request_key(request, "E", "V") == expected
    assert request_key(request, "E", "V") == expected  # from the memo
    other = Request(messages=chat("sys", "Which vehicles?"), image=b"\x01\x02", seed=seed,
                    constraint=Constraint("subset", ("cat", "dog")), max_tokens=32)
    assert request_key(other, "E", "V") != expected


def test_every_answer_of_a_shard_is_durable_before_the_shard_is_renamed(build, monkeypatch) -> None:
    from builder.publish import layout
    from builder.publish.writers.base import Writer

    seen: list[int] = []
    original = Writer.end_shard

    def end_shard(self: Writer) -> Path:
        if self.format == "index":  # once per shard (the index writer is always there)
            seen.append(_rows(self.out / layout.CACHE))
        return original(self)

    monkeypatch.setattr(Writer, "end_shard", end_shard)
    result = build()
    shards = [json.loads(layout.shard_stats_path(result.out, s).read_text()) for s in range(result.shards)]
    sent = [s["sent"] for s in shards]
    assert sum(sent) > 0 and all(s["retries"] == 0 for s in shards)
    assert seen == [sum(sent[: i + 1]) for i in range(len(sent))]  # answered so far = committed so far
