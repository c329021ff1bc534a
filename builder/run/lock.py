"""One writer per output folder: a lock taken before anything is written, naming who holds it.

The lock is `flock(2)` on OUT/.tagllm.lock. The kernel drops it when its process ends, however it
ends, so a killed build never blocks the next one. The file also holds a record of its holder
(host, pid, command, start): a refused build names the holder, and a build that gets the lock but
finds a record (the holder died before it could remove it) takes it over and says so. A whole
build, `finalize`, relabel and retry-failed hold it exclusively; `--part I/N` builds hold it shared
(parts run side by side) and their own OUT/.tagllm.part-I-of-N.lock exclusively, so two copies of
one part refuse each other and `finalize` refuses while any part runs.

NFS: Linux turns flock on NFS into a POSIX lock held by the server (NLM on v3, the protocol's own
locks on v4), so the lock holds across hosts, unless the mount has `nolock` or `local_lock=...`
(then each host only sees its own locks). Where the filesystem refuses locks (ENOLCK, EOPNOTSUPP)
the lock file is created with O_EXCL instead: a record of a live process, or of any process on
another host, refuses the build; one of a dead process on this host is taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from builder.errors import RunError
from builder.publish import layout

Notify = Callable[[str], None]
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_held: dict[tuple[str, bool], list[Any]] = {}  # (path, shared) -> [fd, depth]: reentrant within a process


class Busy(Exception):
    """The lock is held by another process; `record` is what its holder wrote (may be empty)."""

    def __init__(self, record: dict[str, Any]):
        super().__init__(record)
        self.record = record


def to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def holder_record(part: tuple[int, int] | None = None) -> dict[str, Any]:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("__main__.py", "tagllm"):
        argv[0] = "tagllm"
    record = {"host": socket.gethostname(), "pid": os.getpid(), "command": shlex.join(argv),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if part is not None:
        record["part"] = f"{part[0]}/{part[1]}"
    return record


def describe(record: dict[str, Any]) -> str:
    """'part 0/2, pid P on host H since T: `command`' (what is known of it)."""
    if not record:
        return "a process that has not written its name yet"
    who = f"part {record['part']}, " if record.get("part") else ""
    return (f"{who}pid {record.get('pid')} on host {record.get('host')} since {record.get('started')}: "
            f"`{record.get('command')}`")


def read_record(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def _flock(path: Path, shared: bool, wait: bool) -> int:
    """An fd of the file now at `path`, locked; Busy when held elsewhere and not waiting."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise Busy(read_record(path)) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder we waited for removes the file as it lets go: lock the one at the path now
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def process_alive(record: dict[str, Any]) -> bool:
    """True unless the record names a process of this host that is gone (another host's cannot be checked)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _exclusive_file(path: Path, record: dict[str, Any], notify: Notify) -> int:
    """Without flock: O_EXCL creation; a dead local holder's file is removed and created again."""
    for _ in range(2):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            old = read_record(path)
            if process_alive(old) or old.get("pid") == record["pid"]:
                raise Busy(old) from None
            notify(f"note: {path.parent}: took over the lock of a build that is gone ({describe(old)})")
            path.unlink(missing_ok=True)
    raise Busy(read_record(path))


@contextmanager
def locked(path: Path, *, shared: bool = False, wait: bool = False, part: tuple[int, int] | None = None,
           on_wait: Callable[[dict[str, Any]], str] | None = None, notify: Notify = to_stderr) -> Iterator[None]:
    """Hold the lock file `path` (created if needed) for the block; Busy when another process holds it.

    An exclusive holder writes its record into the file and removes the file as it lets go.
    """
    key = (str(path.resolve()), shared)
    if key in _held:  # this process holds it already (relabel runs a build inside its own lock)
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    record = holder_record(part)
    try:
        try:
            fd, flocked = _flock(path, shared, wait=False), True
        except Busy as busy:
            if not wait:
                raise
            notify(on_wait(busy.record) if on_wait else f"waiting for {describe(busy.record)}")
            fd, flocked = _flock(path, shared, wait=True), True
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        if shared:  # parts without flock: only their own part locks guard them
            yield
            return
        fd, flocked = _exclusive_file(path, record, notify), False
    try:
        old = read_record(path) if flocked else {}
        if old and (old.get("host"), old.get("pid")) != (record["host"], record["pid"]):
            notify(f"note: {path.parent}: took over the lock of a build that is gone ({describe(old)})")
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        elif old:
            os.ftruncate(fd, 0)  # a dead exclusive holder's record: it no longer holds anything
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            del _held[key]
            if not shared:
                path.unlink(missing_ok=True)  # before letting go: a waiter then locks a fresh file
    finally:
        os.close(fd)


def part_lock_path(out: Path, part: tuple[int, int]) -> Path:
    return Path(out) / f".tagllm.part-{part[0]:05d}-of-{part[1]:05d}.lock"


def running_parts(out: Path) -> list[dict[str, Any]]:
    """Records of the parts whose lock is held now (a leftover file of a finished part is not)."""
    found = []
    for path in sorted(Path(out).glob(".tagllm.part-*.lock")):
        try:
            fd = _flock(path, shared=True, wait=False)
        except Busy as busy:
            found.append(busy.record or {"part": path.name.split(".")[1].removeprefix("part-")})
            continue
        except OSError:
            continue
        os.close(fd)
    return found


def _refusal(out: Path, record: dict[str, Any], what: str) -> RunError:
    parts = running_parts(out) if not record else []
    if parts:
        holders = "; ".join(describe(r) for r in parts)
        return RunError(f"{out}: {len(parts)} part build(s) are writing here: {holders}; {what}")
    return RunError(f"{out}: another build is writing here, {describe(record)}; {what}")


@contextmanager
def output_lock(out: Path, *, wait: bool = False, part: tuple[int, int] | None = None,
                what: str = "wait for it to finish (or pass --wait), or choose another --out",
                notify: Notify = to_stderr) -> Iterator[None]:
    """The folder's writer lock (created with the folder if needed): exclusive, or shared plus the
    part's own lock for `--part`. Refuses with one line naming the holder, or waits when asked."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main = out / layout.LOCK

    def waiting(record: dict[str, Any]) -> str:
        holder = f"the build writing here, {describe(record)}" if record else "the part builds writing here"
        return f"{out}: waiting for {holder}"

    try:
        with locked(main, shared=part is not None, wait=wait, on_wait=waiting, notify=notify):
            if part is None:
                yield
                return
            with locked(part_lock_path(out, part), wait=wait, part=part, on_wait=waiting, notify=notify):
                yield
    except Busy as busy:
        raise _refusal(out, busy.record, what) from None


def writing_now(out: Path) -> bool:
    """True while another process holds the folder's lock exclusively (its files may be half made)."""
    try:
        fd = os.open(Path(out) / layout.LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
