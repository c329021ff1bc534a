"""One request cache per writing process, read together: what parts and Ray workers share.

SQLite wants one writer per file, above all on shared filesystems (NFS, Lustre) where locks are
unreliable. So each part or worker writes its own file `OUT/caches/NAME.sqlite` and, on a miss,
looks in `OUT/cache.sqlite` and in the other files that held answers when it started (answers of
an earlier, interrupted run: a shard redone elsewhere replays them instead of asking again).
`merge_caches` folds every file into `OUT/cache.sqlite` when the build is finalized, so relabel,
retry-failed and later resumes find one cache.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from builder.ask.cache import Entries, RequestCache
from builder.publish import layout

CACHES_DIR = layout.CACHES_DIR


def open_cache(out: Path, name: str | None = None) -> RequestCache:
    """The cache a process writes to: OUT/cache.sqlite, or its own file when it has a name."""
    folder = Path(out) / CACHES_DIR
    if name is None and not folder.is_dir():
        return RequestCache(Path(out) / layout.CACHE)
    own = folder / f"{name}.sqlite" if name else Path(out) / layout.CACHE
    others = [p for p in sorted(folder.glob("*.sqlite")) if p != own] if folder.is_dir() else []
    if name:
        others.insert(0, Path(out) / layout.CACHE)
    return LayeredCache(own, [p for p in others if p.is_file()])


class LayeredCache(RequestCache):
    """Writes to its own file; reads its own, then the other files (read only) that held answers."""

    def __init__(self, path: Path, others: list[Path]):
        super().__init__(path)
        self._others = [db for db in map(_read_only, others) if db is not None]

    def get(self, key: str) -> Entries | None:
        found = super().get(key)
        if found is not None:
            return found
        for db in self._others:
            row = db.execute("SELECT result FROM answers WHERE key = ?", (key,)).fetchone()
            if row is not None:
                entries: Entries = json.loads(row[0])
                self.put(key, entries, new=len(entries))  # the shard is now this process's: keep its answers together
                return entries
        return None

    def close(self) -> None:
        for db in self._others:
            db.close()
        super().close()


def _read_only(path: Path) -> sqlite3.Connection | None:
    """A read-only connection to a cache file that holds answers; None when it holds none."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        if db.execute("SELECT 1 FROM answers LIMIT 1").fetchone() is None:
            db.close()
            return None
        return db
    except sqlite3.Error:
        return None


def merge_caches(out: Path) -> int:
    """Fold every worker file into OUT/cache.sqlite and remove it; returns the rows added."""
    folder = Path(out) / CACHES_DIR
    if not folder.is_dir():
        return 0
    main = sqlite3.connect(str(Path(out) / layout.CACHE), isolation_level=None)
    main.execute("PRAGMA journal_mode=WAL")
    main.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
    added = 0
    for path in sorted(folder.glob("*.sqlite")):
        before = main.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        main.execute("ATTACH DATABASE ? AS part", (str(path),))
        # A row both files hold (an image a killed worker began and another finished): keep every answer.
        both = main.execute("SELECT a.key, a.result, p.result FROM answers a JOIN part.answers p USING (key) "
                            "WHERE a.result != p.result").fetchall()
        main.execute("INSERT OR IGNORE INTO answers SELECT key, result FROM part.answers")
        for key, ours, theirs in both:
            merged = json.dumps({**json.loads(theirs), **json.loads(ours)}, separators=(",", ":"))
            main.execute("UPDATE answers SET result = ? WHERE key = ?", (merged, key))
        main.execute("DETACH DATABASE part")
        added += main.execute("SELECT COUNT(*) FROM answers").fetchone()[0] - before
    main.close()
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return added


def copy_new_rows(cache: RequestCache, since: int, dest: Path) -> int:
    """Copy the rows `cache` committed after rowid `since` into a new cache file `dest`; returns the last
    rowid copied (`since` when there was none, and then no file is made).

    A replaced row gets a new rowid, so every answer stored since the last copy is in the next one. Only
    committed rows are seen (the caller commits: this may run in another thread while the cache fills)."""
    db = sqlite3.connect(str(cache.path), isolation_level=None)
    try:
        last = db.execute("SELECT MAX(rowid) FROM answers").fetchone()[0] or 0
        if last <= since:
            return since
        dest.unlink(missing_ok=True)
        db.execute("ATTACH DATABASE ? AS delta", (str(dest),))
        db.execute("CREATE TABLE delta.answers (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        db.execute("INSERT INTO delta.answers SELECT key, result FROM answers WHERE rowid > ? AND rowid <= ?",
                   (since, last))
        db.execute("DETACH DATABASE delta")
        return last
    finally:
        db.close()
