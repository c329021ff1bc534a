"""Request cache: every parsed engine answer, stored when its image's questions are answered.

One row per image and kind of question (`subset`, `verify`, ...): the row key hashes the image
bytes sent, the kind, the engine identity (backend, model, and for the simulated engine its noise
model) and the vocabulary version; the row holds the answers of that image by *question digest*
(a hash of the rendered messages, the constraint, the decoding parameters, the engine and the
vocabulary). So one image costs two rows, not one per request, and a re-check with a changed
concept description still replays every question that did not change. A killed run resumes by
replaying answers from here; re-thresholding never needs the engine at all.

Rows are committed in batches (one SQLite transaction per `batch` answers or per `max_delay`
seconds, whichever comes first, written by a thread of its own) and always before a shard's files
are renamed (`commit()`), so a SIGKILL loses at most the uncommitted answers (two batches) and
those of images whose questions were still being answered, which a resumed run re-asks.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from builder.engines.base import Request, Result
from builder.images import image_digest

FORMAT = "v2"  # part of every row key: rows of another layout are never misread, only missed
STORED = ("text", "yes_prob", "prompt_tokens", "cached_tokens", "completion_tokens", "latency", "attempts",
          "extra", "gpu_seconds", "gpus")  # what a replayed answer needs (only answers that parsed are stored)
BATCH = 64  # answers per transaction: one commit per answer cost ~8% of a build's time
MAX_DELAY = 1.0  # seconds an answer may wait for its batch's commit (checked at each put)
_MEMO_MAX = 4096
_QUESTIONS: dict[tuple, tuple[Any, str]] = {}  # -> (the messages object, the digest)

Entries = dict[str, list[Any]]  # question digest -> the stored fields of its answer


def _question_json(request: Request, engine_id: str, vocab_digest: str) -> bytes:
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


def question_digest(request: Request, engine_id: str, vocab_digest: str) -> str:
    """sha256 of everything but the image, made once per question.

    Builders render each question's messages once and reuse the list, so the memo is keyed by that
    list's identity (the memo holds the list, so the identity cannot be reused by another one)."""
    memo = (id(request.messages), engine_id, vocab_digest, request.constraint, request.max_tokens,
            request.temperature, request.logprobs, request.seed)
    made = _QUESTIONS.get(memo)
    if made is not None and made[0] is request.messages:
        return made[1]
    digest = hashlib.sha256(_question_json(request, engine_id, vocab_digest)).hexdigest()[:32]
    if len(_QUESTIONS) >= _MEMO_MAX:
        _QUESTIONS.clear()
    _QUESTIONS[memo] = (request.messages, digest)
    return digest


def row_key(request: Request, engine_id: str, vocab_digest: str, question: str) -> str:
    """The row of a request: its image and kind of question (a request without an image: its own row)."""
    kind = request.tag.split(":", 1)[0]
    owner = image_digest(request.image) if request.image else question
    return hashlib.sha256(f"{FORMAT}\x1f{owner}\x1f{kind}\x1f{engine_id}\x1f{vocab_digest}".encode()).hexdigest()


_EXTRA = STORED.index("extra")
REPLAYED_EXTRA = ("score_bound",)  # what of `Result.extra` a replay reads (the record's raw answers show it)


def stored(result: Result) -> list[Any]:
    """The fields a replay needs (engine-specific extras such as full logprobs stay out: the score is in)."""
    row = [getattr(result, f) for f in STORED]
    row[_EXTRA] = {k: v for k, v in result.extra.items() if k in REPLAYED_EXTRA}
    return row


def replayed(entry: list[Any]) -> Result:
    return Result(**dict(zip(STORED, entry)))


class RequestCache:
    """SQLite in WAL mode, one row per image and kind of question. Rows are written in batches by one
    writer thread (the commit's disk I/O stays off the event loop) and always before a shard commits.
    """

    def __init__(self, path: Path, batch: int = BATCH, max_delay: float = MAX_DELAY):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch = max(1, batch)
        self.max_delay = max_delay
        self._lock = threading.Lock()
        self._db = self._connect(check_same_thread=False)  # reads, from the loop thread
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        # A new output starts with an empty file: no lookup reaches SQLite until a batch is written.
        self._in_db = self._db.execute("SELECT 1 FROM answers LIMIT 1").fetchone() is not None
        self._pending: dict[str, str] = {}  # rows of the batch being filled
        self._pending_answers = 0
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

    def get(self, key: str) -> Entries | None:
        """The answers stored under a row key (pending, being written or committed), or None."""
        with self._lock:
            blob = self._pending.get(key) or self._writing.get(key)
            if blob is None and self._in_db:
                row = self._db.execute("SELECT result FROM answers WHERE key = ?", (key,)).fetchone()
                blob = row[0] if row else None
        return json.loads(blob) if blob is not None else None

    def put(self, key: str, entries: Entries, new: int = 1) -> None:
        """Store a row (every answer it should hold, old and `new`); it replaces the row's earlier version."""
        blob = json.dumps(entries, separators=(",", ":"))
        now = time.monotonic()
        with self._lock:
            if not self._pending:
                self._opened = now
            self._pending[key] = blob
            self._pending_answers += max(1, new)
            full = self._pending_answers >= self.batch or now - self._opened >= self.max_delay
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
            self._writing, self._pending, self._pending_answers = self._pending, {}, 0
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
            self._in_db = True

    def _close_writer(self) -> None:
        if self._wdb is not None:
            self._wdb.close()
            self._wdb = None

    def __len__(self) -> int:
        """Rows committed (images x kinds of question): for tests and tools, never the hot path."""
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
