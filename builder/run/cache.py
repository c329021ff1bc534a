"""Request cache: every engine answer, stored as it arrives, keyed by what determines it.

The key hashes the image bytes sent, the engine identity (backend, model, and for the simulated
engine its noise model), the rendered messages, the constraint, the decoding parameters and the
vocabulary version. A killed run resumes by replaying answers from here, so only requests that
never finished are sent again; re-thresholding never needs the engine at all.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any

from builder.engines.base import Request, Result
from builder.images import image_digest

_FIELDS = [f.name for f in fields(Result)]


def request_key(request: Request, engine_id: str, vocab_digest: str) -> str:
    h = hashlib.sha256()
    h.update(image_digest(request.image or b"").encode())
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
    h.update(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


class RequestCache:
    """SQLite in WAL mode: each answer is committed on arrival and survives SIGKILL."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
            self._db.execute("INSERT OR REPLACE INTO answers (key, result) VALUES (?, ?)", (key, blob))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
