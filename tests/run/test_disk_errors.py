"""Observation 2: filesystem failures end a build with one line naming the path and what to do.

Exit 1, no temporary file left behind, no shard half renamed, and the same command resumes. A
full disk is a real small filesystem (a tmpfs in a private mount namespace, where `unshare` may
mount one) and an injected ENOSPC everywhere; too many open files is a real, lowered limit.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from run.test_resilience import comparable, labeled_folder

from builder.errors import os_failure
from builder.publish import layout

INJECT = """
import errno, os, sys
from builder.publish.writers import webdataset
real, calls = webdataset.TarSamples.write, [0]
def write(self, key, fields):
    calls[0] += 1
    if calls[0] > int(os.environ["FAIL_AFTER"]):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(self, key, fields)
webdataset.TarSamples.write = write
from builder.cli import main
sys.argv[0] = "tagllm"
main()
"""


@pytest.fixture
def recipe(tmp_path: Path, small_vocab_file: Path):
    folder = labeled_folder(tmp_path / "photos", 24)

    def write(out: Path) -> Path:
        data = {"name": "disk", "source": {"kind": "folder", "path": str(folder)},
                "vocabulary": str(small_vocab_file), "engine": {"kind": "simulated", "concurrency": 8},
                "output": {"dir": str(out), "samples_per_shard": 4}}
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def cli(*args: str, env: dict | None = None, code: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "builder"]
    return subprocess.run([*head, *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})}, **kwargs)


def error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if not line.startswith("SIMULATED ENGINE")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*") if p.is_file())


@pytest.mark.parametrize(("exc", "words"), [
    (OSError(errno.ENOSPC, "No space left on device", "/data/x.tar"), "/data/x.tar: no space left on the device; free some space"),
    (OSError(errno.EACCES, "Permission denied", "/data/out"), "/data/out: permission denied; give this user write access"),
    (OSError(errno.EROFS, "Read-only file system"), "OUT: read-only filesystem; make it writable"),
    (OSError(errno.EMFILE, "Too many open files"), "OUT: too many open files; raise the open-file limit (ulimit -n"),
    (OSError("IOError: [Errno 28] Error writing bytes to file"), "OUT: no space left on the device"),  # pyarrow's
    (sqlite3.OperationalError("database or disk is full"), "OUT: no space left on the device"),
])
def test_each_filesystem_failure_has_its_line(exc, words):
    problem = os_failure(exc, "OUT", "rerun")
    assert problem is not None and str(problem).startswith(words) and str(problem).endswith(", then rerun")
    assert os_failure(OSError(errno.ECONNREFUSED, "refused"), "OUT") is None  # not the filesystem's
    wrapped = RuntimeError("while writing")
    wrapped.__cause__ = exc
    assert str(os_failure(wrapped, "OUT", "rerun")) == str(problem)


def test_injected_no_space_is_one_line_and_the_same_command_resumes(recipe, tmp_path):
    out, clean = tmp_path / "out", tmp_path / "clean"
    assert cli("build", str(recipe(clean)), "--no-progress").returncode == 0
    failed = cli("build", str(recipe(out)), "--no-progress", code=INJECT, env={"FAIL_AFTER": "10"})
    assert failed.returncode == 1
    assert error_line(failed) == (f"error: {out}: no space left on the device; free some space, "
                                  "then rerun the same command (it resumes)")
    assert layout.completed_shards(out) == [0, 1] and leftovers(out) == []  # shard 2 was dropped whole
    assert layout.read_json(out / layout.MANIFEST)["status"] == "running"
    again = cli("build", str(recipe(out)), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "2 kept from an earlier run" in again.stdout
    assert comparable(out) == comparable(clean)


def _can_mount_tmpfs(where: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"],
                           capture_output=True)
    return probe.returncode == 0


def test_a_full_small_filesystem_then_more_space_resumes(recipe, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare -rm)")
    clean = tmp_path / "clean"
    assert cli("build", str(recipe(clean)), "--no-progress").returncode == 0
    size = sum(p.stat().st_size for p in clean.rglob("*") if p.is_file())
    out = mnt / "out"
    build = f"{sys.executable} -m builder build {recipe(out)} --no-progress"
    script = (f"set -u; mount -t tmpfs -o size={size // 2048}k tmpfs {mnt}; "
              f"{build} > {tmp_path}/first.out 2> {tmp_path}/first.err; echo $? > {tmp_path}/first.rc; "
              f"find {out} -name '.*' -type f > {tmp_path}/first.leftovers; "
              f"mount -o remount,size={size // 256}k {mnt}; "
              f"{build} > {tmp_path}/second.out 2> {tmp_path}/second.err; echo $? > {tmp_path}/second.rc; "
              f"cp -a {out} {tmp_path}/result")
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, timeout=600, env=os.environ.copy())
    first = subprocess.CompletedProcess([], int((tmp_path / "first.rc").read_text()),
                                        (tmp_path / "first.out").read_text(), (tmp_path / "first.err").read_text())
    assert first.returncode == 1
    line = error_line(first)  # pyarrow, tar or sqlite may be the one that meets the full disk
    assert line.startswith("error: ") and ": no space left on the device; free some space, then rerun the same " \
        "command (it resumes)" in line and str(out) in line, line
    assert (tmp_path / "first.leftovers").read_text() == ""
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()
    assert comparable(tmp_path / "result") == comparable(clean)


OPEN_FAILS = """
import errno, os, sys
from builder.publish.writers import webdataset
real, calls = webdataset.WebDatasetWriter._open, [0]
def opened(self, path):
    calls[0] += 1
    if calls[0] > 1:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(path))
    return real(self, path)
webdataset.WebDatasetWriter._open = opened
from builder.cli import main
sys.argv[0] = "tagllm"
main()
"""


def test_too_many_open_files_is_one_line_naming_the_file(recipe, tmp_path):
    """Injected where the second shard's tar is opened (a real lowered `ulimit -n` fails first in
    whichever part of the process opens a file next, which depends on the machine)."""
    out = tmp_path / "out"
    done = cli("build", str(recipe(out)), "--no-progress", code=OPEN_FAILS)
    assert done.returncode == 1
    tmp = out / "webdataset" / ".shard-00001.tar."
    line = error_line(done)
    assert line.startswith(f"error: {tmp}") and line.endswith(
        ": too many open files; raise the open-file limit (ulimit -n 65536) or lower engine.concurrency, "
        "then rerun the same command (it resumes)"), line
    assert leftovers(out) == [] and layout.completed_shards(out) == [0]


def test_a_writer_that_cannot_begin_its_shard_leaves_no_file_of_the_others(tmp_path: Path, small_vocab_file: Path):
    """The full disk met while the next shard's files are being created: what the first writers created goes."""
    from builder.publish.writers import make_writers
    from builder.recipe.vocab import load_vocabulary
    from builder.run.shards import WriterSink

    writers = make_writers(tmp_path, load_vocabulary(small_vocab_file), ["webdataset", "hf"])
    real = writers[-1].begin_shard

    def full(shard: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    writers[-1].begin_shard = full
    with pytest.raises(OSError):
        WriterSink(tmp_path, 3, writers, {"sent": 0, "retries": 0}, simulated=True)
    assert leftovers(tmp_path) == []
    writers[-1].begin_shard = real
