"""Image decoding off the event loop: in worker processes, or in threads bounded by a pixel budget.

With a core to spare, `decode_pool()` gives the worker processes of `builder.images.workers` (no GIL
shared with the loop). Otherwise (one core, or TAGLLM_DECODE=threads) the threads below do it.

A build prepares every image (validate, normalise) before asking about it. Doing that on the event
loop would stall every request in flight; doing it in an unbounded pool (asyncio's default
executor has cores + 4 threads) lets decode threads crowd the loop out of the GIL and lets a few
huge images hold gigabytes at once. Here a few threads (one per core, at most `MAX_WORKERS`) do the
work, and each decode first takes its image's pixels from a shared `PixelBudget`: many small
images decode side by side, a huge one waits until it fits (and always fits alone), so decoded
memory stays near `pixel_budget * 4` bytes whatever the source holds.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from builder.images.prepare import Prepared, prepare_image
from builder.images.workers import ProcessDecoders

DEFAULT_PIXEL_BUDGET = 64_000_000  # about 256 MB of decoded RGBA at once
MAX_WORKERS = 4


class PixelBudget:
    """A counting semaphore in pixels, shared by decode threads."""

    def __init__(self, pixels: int):
        self.total = max(1, int(pixels))
        self.in_use = 0
        self.peak = 0  # most pixels held at once (for tests and benchmarks)
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait until `pixels` fit, hold them while decoding. An image over the total waits for all of it."""
        need = min(max(1, int(pixels)), self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.in_use + need <= self.total)
            self.in_use += need
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= need
                self._cond.notify_all()


class DecodePool:
    """Bounded decode threads plus a pixel budget; `prepare` is awaited from the event loop."""

    def __init__(self, workers: int | None = None, pixel_budget: int = DEFAULT_PIXEL_BUDGET):
        self.workers = max(1, workers or min(MAX_WORKERS, _cores()))
        self.budget = PixelBudget(pixel_budget)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="tagllm-decode")

    async def prepare(self, data: bytes | None, max_pixels: int, limit_pixels: int) -> Prepared:
        """`prepare_image` in a decode thread under the budget; raises its ImageProblem."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.prepare_now, data, max_pixels, limit_pixels)

    def prepare_now(self, data: bytes | None, max_pixels: int, limit_pixels: int) -> Prepared:
        return prepare_image(data, max_pixels, limit_pixels, budget=self.budget.hold)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


_default: DecodePool | None = None
_processes: ProcessDecoders | None = None
_default_lock = threading.Lock()


def decode_pool(pixel_budget: int = DEFAULT_PIXEL_BUDGET) -> DecodePool | ProcessDecoders:
    """The process's decoders (made on first use, shared by every build in the process).

    With a core to spare, worker processes (`builder.images.workers`): no decode competes with the
    event loop for the GIL, and each worker holds one image at a time. On one core (or with
    TAGLLM_DECODE=threads), bounded threads under the pixel budget: a recipe asking for another
    budget (`output.decode_pixel_budget`) gets it from then on."""
    global _default, _processes
    with _default_lock:
        cores = _cores()
        if cores > 1 and os.name == "posix" and os.environ.get("TAGLLM_DECODE", "processes") != "threads":
            if _processes is None:
                _processes = ProcessDecoders(min(MAX_WORKERS, cores - 1))
                atexit.register(_processes.close)
            return _processes
        if _default is None:
            _default = DecodePool(pixel_budget=pixel_budget)
        elif _default.budget.total != pixel_budget:
            _default.budget = PixelBudget(pixel_budget)
        return _default


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
