"""Observation 1: one writer per output folder, across processes (`builder.run.lock`)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from run.test_resilience import comparable, labeled_folder

from builder.errors import RunError
from builder.publish import layout
from builder.run import lock


@pytest.fixture
def recipe(tmp_path: Path, small_vocab_file: Path):
    folder = labeled_folder(tmp_path / "photos", 24)

    def write(name: str, concurrency: int = 64) -> Path:
        """Every request takes 0.1 s; concurrency (not part of the recipe's digest) sets the pace."""
        data = {"name": "locks", "source": {"kind": "folder", "path": str(folder)},
                "vocabulary": str(small_vocab_file),
                "engine": {"kind": "simulated", "concurrency": concurrency, "simulation": {"latency": 0.1}},
                "output": {"dir": str(tmp_path / "out"), "samples_per_shard": 4}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "builder", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, timeout=240)


def holding(path: Path, proc: subprocess.Popen, timeout: float = 60) -> dict:
    """Wait until `proc` has written its record into the lock file `path`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = lock.read_record(path)
        if record.get("pid") == proc.pid:
            return record
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"no lock record of pid {proc.pid} in {path}")


def error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if not line.startswith("SIMULATED ENGINE")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_second_build_refuses_naming_the_holder_and_a_dead_holder_is_taken_over(recipe, tmp_path):
    out = tmp_path / "out"
    slow = recipe("slow", concurrency=1)  # would take a while: it is killed below
    first = start("build", str(slow), "--no-progress")
    record = holding(out / layout.LOCK, first)
    assert record["host"] == socket.gethostname() and "tagllm build" in record["command"]
    second = finish("build", str(recipe("fast")), "--no-progress")
    assert second.returncode == 1
    line = error_line(second)
    assert line.startswith(f"error: {out}: another build is writing here, pid {first.pid} on host ")
    assert "tagllm build" in line and "--wait" in line
    assert "sent this run" not in second.stdout  # it tagged nothing
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert lock.read_record(out / layout.LOCK)["pid"] == first.pid  # its record outlives it; its lock does not
    third = finish("build", str(recipe("fast")), "--no-progress")
    assert third.returncode == 0, third.stderr
    assert f"took over the lock of a build that is gone (pid {first.pid} on host" in third.stderr
    assert not (out / layout.LOCK).exists()
    manifest = json.loads((out / layout.MANIFEST).read_text())
    assert manifest["status"] == "complete"
    (tmp_path / "clean.yaml").write_text((tmp_path / "fast.yaml").read_text().replace(str(out), str(tmp_path / "clean")))
    assert finish("build", str(tmp_path / "clean.yaml"), "--no-progress").returncode == 0
    assert comparable(out) == comparable(tmp_path / "clean")  # one writer's output, nothing mixed


def test_wait_queues_behind_the_holder_then_resumes_its_output(recipe, tmp_path):
    out = tmp_path / "out"
    first = start("build", str(recipe("slow", concurrency=2)), "--no-progress")
    holding(out / layout.LOCK, first)
    second = finish("build", str(recipe("fast")), "--no-progress", "--wait")
    assert first.wait(timeout=240) == 0
    assert second.returncode == 0, second.stderr
    assert f"{out}: waiting for the build writing here, pid {first.pid}" in second.stderr
    assert "sent this run 0" in second.stdout and "24 kept from the earlier build" in second.stdout


def test_parts_lock_their_own_part_and_finalize_refuses_while_one_runs(recipe, tmp_path):
    out = tmp_path / "out"
    slow = recipe("slow", concurrency=1)
    part0 = start("build", str(slow), "--part", "0/2", "--no-progress")
    holding(lock.part_lock_path(out, (0, 2)), part0)
    part0.send_signal(signal.SIGSTOP)  # paused, it keeps its lock: it cannot finish first on a loaded machine
    again = finish("build", str(slow), "--part", "0/2", "--no-progress")
    assert again.returncode == 1
    assert error_line(again).startswith(f"error: {out}: another build is writing here, part 0/2, pid {part0.pid}")
    other = finish("build", str(recipe("fast")), "--part", "1/2", "--no-progress")  # the other part runs beside it
    assert other.returncode == 0, other.stderr
    fin = finish("finalize", str(out))
    assert fin.returncode == 1
    assert error_line(fin) == (f"error: {out}: 1 part build(s) are writing here: part 0/2, pid {part0.pid} on host "
                               f"{socket.gethostname()} since {lock.read_record(lock.part_lock_path(out, (0, 2)))['started']}"
                               f": `{lock.read_record(lock.part_lock_path(out, (0, 2)))['command']}`; "
                               "finalize once every part has finished")
    whole = finish("build", str(recipe("fast")), "--no-progress")
    assert whole.returncode == 1 and "part 0/2, pid" in error_line(whole)
    part0.send_signal(signal.SIGKILL)
    part0.wait()
    fin = finish("finalize", str(out))  # no part holds a lock now: finalize checks the shards
    assert fin.returncode == 1 and "shards are not complete" in error_line(fin) and "(parts 0/2)" in fin.stderr
    assert finish("build", str(recipe("fast")), "--part", "0/2", "--no-progress").returncode == 0
    done = finish("finalize", str(out))
    assert done.returncode == 0, done.stderr


def test_without_flock_an_exclusive_file_guards_the_folder(tmp_path, monkeypatch):
    """Where the filesystem refuses locks: a live holder's record refuses, a dead local one is taken over."""
    def refuse(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock.fcntl, "flock", refuse)
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = {"host": socket.gethostname(), "pid": sleeper.pid, "command": "tagllm build x", "started": "then"}
        (out / layout.LOCK).write_text(json.dumps(live))
        with pytest.raises(RunError, match=f"another build is writing here, pid {sleeper.pid} on host"):
            with lock.output_lock(out):
                pass
        far = dict(live, host="another-host", pid=1)
        (out / layout.LOCK).write_text(json.dumps(far))
        with pytest.raises(RunError, match="on host another-host"):  # cannot be checked from here: refused
            with lock.output_lock(out):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    (out / layout.LOCK).write_text(json.dumps(live))  # now dead
    notes: list[str] = []
    with lock.output_lock(out, notify=notes.append):
        assert lock.read_record(out / layout.LOCK)["pid"] == os.getpid()
    assert notes and f"took over the lock of a build that is gone (pid {sleeper.pid}" in notes[0]
    assert not (out / layout.LOCK).exists()


def test_the_lock_is_reentrant_within_a_process_and_exclusive_between_opens(tmp_path):
    out = tmp_path / "out"
    with lock.output_lock(out):
        with lock.output_lock(out):  # relabel holds it around the build it runs
            pass
        assert lock.writing_now(out)  # another open of the file (another process) sees it held
    assert not lock.writing_now(out) and not (out / layout.LOCK).exists()
