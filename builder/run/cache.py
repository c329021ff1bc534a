"""Request cache: every engine answer, stored as it arrives, keyed by what determines it.

The key hashes the image bytes sent, the engine identity (backend, model, and for the simulated
engine its noise model), the rendered messages, the constraint, the decoding parameters and the
vocabulary version. A killed run resumes by replaying answers from here, so only requests that
never finished are sent again; re-thresholding never needs the engine at all.

Answers are committed in small batches (one SQLite transaction per `batch` answers or per
`max_delay` seconds, whichever comes first, written by a thread of its own) and always before a
shard's files are renamed (`commit()`), so a SIGKILL loses at most the uncommitted answers (two
batches at most), which a resumed run re-asks.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

from builder.engines.base import Request, Result
from builder.images import image_digest

_FIELDS = [f.name for f in fields(Result)]
_PAYLOADS: dict[tuple, bytes] = {}  # the request's text part of the key, made once per question
_PAYLOADS_MAX = 4096
BATCH = 64  # answers per transaction: one commit per answer cost ~8% of a build's time
MAX_DELAY = 1.0  # seconds an answer may wait for its batch's commit (checked at each put)


def _freeze(messages: list[dict[str, Any]]) -> tuple:
    """A hashable copy of chat messages (two levels: messages, then content parts)."""
    out = []
    for message in messages:
        items = []
        for k, v in message.items():
            if isinstance(v, list):
                v = tuple(tuple(p.items()) if isinstance(p, dict) else p for p in v)
            items.append((k, v))
        out.append(tuple(items))
    return tuple(out)


def _make_payload(request: Request, engine_id: str, vocab_digest: str) -> bytes:
    payload = {
        "engine": engine_id,
        "messages": request.messages,
        "constraint": request.constraint.key(),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "logprobs": request.logprobs,
        "seed": request.seed,
        "vocab": vocab_digest,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _payload(request: Request, engine_id: str, vocab_digest: str) -> bytes:
    """The JSON of everything but the image: the same for every image asked the same question."""
    try:
        memo = (engine_id, vocab_digest, _freeze(request.messages), request.constraint, request.max_tokens,
                request.temperature, request.logprobs, request.seed)
        made = _PAYLOADS.get(memo)
    except TypeError:  # messages nested deeper than chat parts: no memo, same key
        return _make_payload(request, engine_id, vocab_digest)
    if made is None:
        made = _make_payload(request, engine_id, vocab_digest)
        if len(_PAYLOADS) >= _PAYLOADS_MAX:
            _PAYLOADS.clear()
        _PAYLOADS[memo] = made
    return made


def request_key(request: Request, engine_id: str, vocab_digest: str) -> str:
    h = hashlib.sha256(image_digest(request.image or b"").encode())
    h.update(_payload(request, engine_id, vocab_digest))
    return h.hexdigest()


class RequestCache:
    """SQLite in WAL mode. Answers are written in batches by one writer thread (the commit's disk
    I/O stays off the event loop) and always before a shard commits; a SIGKILL loses at most the
    batch being filled and the one being written (`max_loss` answers), which a resumed run re-asks.
    """

    def __init__(self, path: Path, batch: int = BATCH, max_delay: float = MAX_DELAY):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch = max(1, batch)
        self.max_delay = max_delay
        self.max_loss = 2 * self.batch
        self._lock = threading.Lock()
        self._db = self._connect(check_same_thread=False)  # reads (on resume), from the loop thread
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        # A new output starts with an empty cache: nothing to look up until a rerun.
        self._empty_at_open = self._db.execute("SELECT 1 FROM answers LIMIT 1").fetchone() is None
        self._pending: dict[str, str] = {}  # answers of the batch being filled
        self._writing: dict[str, str] = {}  # the batch the writer thread is committing
        self._opened = 0.0  # when the batch being filled got its first answer
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="tagllm-cache")
        self._in_flight: Future | None = None
        self._wdb: sqlite3.Connection | None = None  # the writer thread's own connection

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=check_same_thread, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Keys are random hashes, so inserts touch pages all over the B-tree. 16 MiB of pages per
        # connection keeps the hot ones; the rest come from the OS page cache, in the writer thread,
        # off the event loop. (64 MiB made the peak RSS of a 20k-image build 1.28x a 1k one.)
        db.execute("PRAGMA cache_size=-16384")
        return db

    def __bool__(self) -> bool:
        """A cache object is always truthy (O(1)); `len()` counts rows and is not for hot paths."""
        return True

    def get(self, key: str) -> Result | None:
        if self._empty_at_open:
            return None
        with self._lock:
            blob = self._pending.get(key) or self._writing.get(key)
            if blob is None:
                row = self._db.execute("SELECT result FROM answers WHERE key = ?", (key,)).fetchone()
                blob = row[0] if row else None
        if blob is None:
            return None
        data: dict[str, Any] = json.loads(blob)
        return Result(**data)

    def put(self, key: str, result: Result) -> None:
        blob = json.dumps({f: getattr(result, f) for f in _FIELDS}, separators=(",", ":"))
        now = time.monotonic()
        with self._lock:
            if not self._pending:
                self._opened = now
            self._pending[key] = blob
            full = len(self._pending) >= self.batch or now - self._opened >= self.max_delay
        if full:
            self._hand_over()

    def commit(self) -> None:
        """Make every answer stored so far durable (called before a shard is committed)."""
        self._hand_over()
        self._wait()

    def _hand_over(self) -> None:
        """Give the filled batch to the writer; one batch in flight at a time bounds what a kill loses."""
        self._wait()
        with self._lock:
            if not self._pending:
                return
            self._writing, self._pending = self._pending, {}
            batch = list(self._writing.items())
        self._in_flight = self._writer.submit(self._write, batch)

    def _wait(self) -> None:
        if self._in_flight is not None:
            self._in_flight.result()  # a write error (disk full) surfaces here, in the build
            self._in_flight = None

    def _write(self, batch: list[tuple[str, str]]) -> None:
        if self._wdb is None:
            self._wdb = self._connect()
        self._wdb.execute("BEGIN")
        self._wdb.executemany("INSERT OR REPLACE INTO answers (key, result) VALUES (?, ?)", batch)
        self._wdb.execute("COMMIT")
        with self._lock:
            self._writing = {}

    def _close_writer(self) -> None:
        if self._wdb is not None:
            self._wdb.close()
            self._wdb = None

    def __len__(self) -> int:
        self.commit()
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._writer.submit(self._close_writer).result()
            self._writer.shutdown(wait=True)
            with self._lock:
                self._db.close()
