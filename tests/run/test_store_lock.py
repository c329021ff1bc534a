"""One writer per object-store output: lock objects made by a conditional PUT (moto's S3 server)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from click.testing import CliRunner
from run.test_store_output import recipe  # noqa: F401  (fixture)

from builder.cli import main
from builder.errors import RunError
from builder.publish.store import StoreOutput
from builder.run import store_lock as sl
from builder.storage import url_fs


def put_record(url: str, name: str, **record) -> None:
    fs, root = url_fs(url)
    fs.pipe_file(f"{root}/{name}", json.dumps(record).encode())


def test_a_second_writer_is_refused_naming_the_holder_then_takes_the_lock_when_free(s3_bucket) -> None:
    store = StoreOutput.open(f"{s3_bucket}/locked")
    with sl.store_lock(store):
        with pytest.raises(RunError, match=rf"{store.url}: another build is writing here, pid {os.getpid()}"):
            with sl.store_lock(StoreOutput.open(store.url)):
                pass
        assert sl.StoreLock(store, ".tagllm.lock").read()["token"]
    fs, root = url_fs(store.url)
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/.tagllm.lock")  # given back
    with sl.store_lock(StoreOutput.open(store.url)):
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(s3_bucket) -> None:
    url = f"{s3_bucket}/stale"
    put_record(url, ".tagllm.lock", host="gone-host", pid=1, renewed=time.time() - sl.STALE - 5, token="old")
    notes: list[str] = []
    with sl.store_lock(StoreOutput.open(url), notify=notes.append):
        pass
    assert notes and "took over the lock of a build that is gone" in notes[0] and "gone-host" in notes[0]
    put_record(url, ".tagllm.lock", host="elsewhere", pid=1, renewed=time.time(), token="live")
    with pytest.raises(RunError, match="pid 1 on host elsewhere"):  # renewed just now on another host: live
        with sl.store_lock(StoreOutput.open(url)):
            pass


def test_parts_and_whole_builds_exclude_each_other(s3_bucket) -> None:
    url = f"{s3_bucket}/parts"
    with sl.store_lock(StoreOutput.open(url), part=(0, 2)):
        with sl.store_lock(StoreOutput.open(url), part=(1, 2)):  # parts run side by side
            with pytest.raises(RunError, match="part 0/2|part 1/2"):
                with sl.store_lock(StoreOutput.open(url)):
                    pass
        with pytest.raises(RunError, match="part 0/2"):  # the same part twice
            with sl.store_lock(StoreOutput.open(url), part=(0, 2)):
                pass
    with sl.store_lock(StoreOutput.open(url)):
        with pytest.raises(RunError, match="another build is writing here"):
            with sl.store_lock(StoreOutput.open(url), part=(1, 2)):
                pass


def test_wait_blocks_until_the_holder_gives_the_lock_back(s3_bucket, monkeypatch) -> None:
    monkeypatch.setattr(sl, "POLL", 0.2)
    url = f"{s3_bucket}/wait"
    first = StoreOutput.open(url)
    held, order = threading.Event(), []

    def hold() -> None:
        with sl.store_lock(first):
            held.set()
            time.sleep(2.0)
            order.append("released")

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    notes: list[str] = []
    with sl.store_lock(StoreOutput.open(url), wait=True, notify=notes.append):
        order.append("taken")
    thread.join()
    assert order == ["released", "taken"] and notes and "waiting for the build writing here" in notes[0]


def test_build_into_a_prefix_another_build_holds_is_refused(recipe, s3_bucket) -> None:  # noqa: F811
    url = f"{s3_bucket}/busy"
    put_record(url, ".tagllm.lock", host="other-host", pid=4242, renewed=time.time(), token="t",
               command="tagllm build other.yaml", started="2026-12-08T00:00:00")
    result = CliRunner().invoke(main, ["build", str(recipe("busy", url)), "--no-progress"])
    assert result.exit_code != 0
    assert f"{url}: another build is writing here, pid 4242 on host other-host" in result.output, result.output
    fs, root = url_fs(url)
    fs.invalidate_cache()
    assert fs.ls(root, detail=False) == [f"{root}/.tagllm.lock"]  # nothing written beside the lock
