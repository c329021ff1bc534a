"""One writer per object-store output: lock objects made by a conditional PUT, renewed while held.

Object stores have no flock. An object PUT with "create only if absent" (If-None-Match: *, s3fs and
gcsfs `mode="create"`) is made by one process only, so `OUT/.tagllm.lock` (a whole build, `finalize`)
and `OUT/.tagllm.part-I-of-N.lock` (a `--part` build) name their holder as the folder's lock files do.
A whole build refuses while a live part lock exists, a part while a live whole-build lock exists.
No kernel drops the lock of a killed process, so the holder rewrites its record every RENEW seconds; a
record not renewed for STALE seconds (or one of a dead process on this host) is taken over. Two
processes taking over one dead lock at the same moment could both delete and create it: each reads the
lock back after SETTLE seconds and only the one whose record is there keeps it (a lock made where there
was none needs no such look: only one conditional PUT succeeds).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from builder.errors import RunError
from builder.publish import layout
from builder.publish.store import StoreOutput
from builder.run.lock import Notify, describe, holder_record, process_alive, to_stderr

RENEW, STALE, SETTLE, POLL = 20.0, 90.0, 1.0, 2.0


class StoreLock:
    """One lock object: taken, renewed by a thread of its own, given back."""

    def __init__(self, store: StoreOutput, name: str, part: tuple[int, int] | None = None):
        self.store, self.name = store, name
        self.record = {**holder_record(part), "token": uuid.uuid4().hex}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.fs.cat_file(self.store.key(self.name)))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # half a record: a holder that died while writing it

    def _write(self, create: bool) -> bool:
        data = json.dumps({**self.record, "renewed": time.time()}).encode()
        try:
            self.store.fs.pipe_file(self.store.key(self.name), data, **({"mode": "create"} if create else {}))
        except FileExistsError:
            return False
        return True

    def try_take(self, notify: Notify) -> dict[str, Any] | None:
        """None when taken; else the live holder's record."""
        if not self._write(create=True):
            old = self.read()
            if old is not None and live(old):
                return old
            notify(f"note: {self.store.url}: took over the lock of a build that is gone ({describe(old or {})})")
            self.store.fs.rm_file(self.store.key(self.name))
            if not self._write(create=True):
                return self.read() or {}
            time.sleep(SETTLE)  # another process taking over the same lock may have deleted ours: look again
            now = self.read()
            if not now or now.get("token") != self.record["token"]:
                return now or {}
        self._thread = threading.Thread(target=self._renew, name="tagllm-store-lock", daemon=True)
        self._thread.start()
        return None

    def _renew(self) -> None:
        while not self._stop.wait(RENEW):
            current = self.read()
            if current is None or current.get("token") == self.record["token"]:
                self._write(create=False)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            current = self.read()
            if current is not None and current.get("token") == self.record["token"]:
                self.store.fs.rm_file(self.store.key(self.name))


def live(record: dict[str, Any]) -> bool:
    """A record renewed within STALE seconds, of a process that is not known to be dead."""
    return time.time() - float(record.get("renewed") or 0) < STALE and process_alive(record)


def live_parts(store: StoreOutput) -> list[dict[str, Any]]:
    found = []
    for name in store.top_names():
        if name.startswith(".tagllm.part-") and name.endswith(".lock"):
            record = StoreLock(store, name).read()
            if record and live(record):
                found.append(record)
    return found


@contextmanager
def store_lock(store: StoreOutput, *, wait: bool = False, part: tuple[int, int] | None = None,
               what: str = "wait for it to finish (or pass --wait), or choose another --out",
               notify: Notify = to_stderr) -> Iterator[None]:
    """The output's lock: the whole-build lock, or a part's own; refuses naming the holder, or waits."""
    name = layout.LOCK if part is None else f".tagllm.part-{part[0]:05d}-of-{part[1]:05d}.lock"
    told = False
    while True:
        lock = StoreLock(store, name, part)
        holder = lock.try_take(notify)
        if holder is None:
            other = _conflict(store, part)
            if other is None:
                break
            lock.release()
            holder = other
        if not wait:
            raise RunError(f"{store.url}: another build is writing here, {describe(holder)}; {what}")
        if not told:
            notify(f"{store.url}: waiting for the build writing here, {describe(holder)}")
            told = True
        time.sleep(POLL)
    try:
        yield
    finally:
        lock.release()


def _conflict(store: StoreOutput, part: tuple[int, int] | None) -> dict[str, Any] | None:
    """A live holder this lock excludes: any part for a whole build, a whole build for a part."""
    if part is None:
        parts = live_parts(store)
        return parts[0] if parts else None
    main = StoreLock(store, layout.LOCK).read()
    return main if main and live(main) else None
