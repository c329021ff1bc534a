"""Live progress on stderr: done/total and time left (when the source knows its size), images/s, ok,
failed by reason, cached answers."""

from __future__ import annotations

import sys
import time
from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Counts what happens during a build; shows it live when `show` is on."""

    def __init__(self, total: int | None = None, show: bool = True, label: str = "tagging",
                 requests: Counter[str] | None = None):
        self.counts: Counter[str] = Counter()
        self.requests = requests if requests is not None else Counter()  # the asker's sent / retries
        self.started = time.perf_counter()
        self.show = show and sys.stderr.isatty()
        self._progress: Progress | None = None
        if self.show:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} img/s  ok {task.fields[ok]}  failed {task.fields[failed]}"
                           "{task.fields[reasons]}  sent {task.fields[sent]}  retried {task.fields[retried]}"
                           "  cached {task.fields[cached]}"),
                TimeElapsedColumn(), *([TextColumn("left"), TimeRemainingColumn()] if total else []),
                console=Console(stderr=True), transient=False,
            )
            self._task = self._progress.add_task(label, total=total, rate=0.0, ok=0, failed=0, reasons="",
                                                 sent=0, retried=0, cached=0)
            self._progress.start()

    def record(self, status: str, reason: str | None, cached: int) -> None:
        self.counts["images"] += 1
        self.counts[status] += 1
        if reason:
            self.counts[f"failed:{reason}"] += 1
        self.counts["cached"] += cached
        if self._progress is not None:
            reasons = ", ".join(f"{k[7:]} {v}" for k, v in sorted(self.counts.items()) if k.startswith("failed:"))
            self._progress.update(self._task, advance=1, rate=self.rate(), ok=self.counts["ok"],
                                  failed=self.counts["failed"], reasons=f" ({reasons})" if reasons else "",
                                  sent=self.requests["sent"], retried=self.requests["retries"],
                                  cached=self.counts["cached"])

    def shard_done(self, stats: dict) -> None:
        """A whole shard committed by another process (a Ray worker): advance by its counts."""
        for key in ("images", "ok", "failed"):
            self.counts[key] += int(stats.get(key, 0))
        self.requests["sent"] += int(stats.get("sent", 0))
        self.requests["retries"] += int(stats.get("retries", 0))
        if self._progress is not None:
            self._progress.update(self._task, advance=int(stats.get("images", 0)), rate=self.rate(),
                                  ok=self.counts["ok"], failed=self.counts["failed"], reasons="",
                                  sent=self.requests["sent"], retried=self.requests["retries"],
                                  cached=self.counts["cached"])

    def skip(self, n: int) -> None:
        """Items of shards finished in an earlier run."""
        self.counts["skipped"] += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n)

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.counts["images"] / elapsed if elapsed > 0 else 0.0

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
