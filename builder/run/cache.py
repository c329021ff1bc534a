"""Request cache: every engine answer, stored as it arrives, keyed by what determines it.

The key hashes the image bytes sent, the engine identity (backend, model, and for the simulated
engine its noise model), the rendered messages, the constraint, the decoding parameters and the
vocabulary version. A killed run resumes by replaying answers from here, so only requests that
never finished are sent again; re-thresholding never needs the engine at all.

Answers are committed in small batches (one SQLite transaction per `batch` answers or per
`max_delay` seconds, whichever comes first) and always before a shard's files are renamed
(`commit()`), so a SIGKILL loses at most the uncommitted batch, which a resumed run re-asks.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
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
    """SQLite in WAL mode; answers are committed in batches and at every shard boundary."""

    def __init__(self, path: Path, batch: int = BATCH, max_delay: float = MAX_DELAY):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch = max(1, batch)
        self.max_delay = max_delay
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Keys are random hashes, so inserts touch pages all over the B-tree: keep them in memory
        # (64 MiB) or every insert into a large cache reads from disk and the build slows down.
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        # A new output starts with an empty cache: nothing to look up until a rerun.
        self._empty_at_open = self._db.execute("SELECT 1 FROM answers LIMIT 1").fetchone() is None
        self._pending = 0  # answers written in the open transaction
        self._opened = 0.0  # when that transaction began

    def __bool__(self) -> bool:
        """A cache object is always truthy (O(1)); `len()` counts rows and is not for hot paths."""
        return True

    def get(self, key: str) -> Result | None:
        if self._empty_at_open:
            return None
        with self._lock:
            row = self._db.execute("SELECT result FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row[0])
        return Result(**data)

    def put(self, key: str, result: Result) -> None:
        blob = json.dumps({f: getattr(result, f) for f in _FIELDS}, separators=(",", ":"))
        with self._lock:
            if self._pending == 0:
                self._db.execute("BEGIN")
                self._opened = time.monotonic()
            self._db.execute("INSERT OR REPLACE INTO answers (key, result) VALUES (?, ?)", (key, blob))
            self._pending += 1
            if self._pending >= self.batch or time.monotonic() - self._opened >= self.max_delay:
                self._commit()

    def commit(self) -> None:
        """Make every answer stored so far durable (called before a shard is committed)."""
        with self._lock:
            self._commit()

    def _commit(self) -> None:
        if self._pending:
            self._db.execute("COMMIT")
            self._pending = 0

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._commit()
            self._db.close()
