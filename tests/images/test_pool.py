"""The decode pool: bounded threads, a pixel budget that caps what is decoded at once."""

from __future__ import annotations

import asyncio
import threading
import time

from tinydata import jpeg

from builder.images import ImageProblem
from builder.images.pool import DecodePool, PixelBudget


def test_the_budget_never_holds_more_than_its_total() -> None:
    budget = PixelBudget(1000)
    lock = threading.Lock()
    seen = {"max": 0, "now": 0}

    def work(pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                seen["now"] += min(pixels, 1000)
                seen["max"] = max(seen["max"], seen["now"])
            time.sleep(0.01)
            with lock:
                seen["now"] -= min(pixels, 1000)

    threads = [threading.Thread(target=work, args=(p,)) for p in (400, 400, 400, 5000, 300, 700)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert seen["max"] <= 1000 and budget.peak <= 1000 and budget.in_use == 0
    assert seen["max"] > 400  # small images did decode side by side


def test_prepare_runs_off_the_loop_and_keeps_failures_as_image_problems() -> None:
    pool = DecodePool(workers=2, pixel_budget=200_000)
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    inner = pool.prepare_now

    def spy(*args):  # noqa: ANN002
        threads.add(threading.get_ident())
        return inner(*args)

    pool.prepare_now = spy  # type: ignore[method-assign]

    async def go() -> list:
        jobs = [pool.prepare(jpeg(i, (320, 240)), 10**7, 10**7) for i in range(8)]
        jobs.append(pool.prepare(b"broken", 10**7, 10**7))
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        results = asyncio.run(go())
    finally:
        pool.close()
    assert all(r.width == 320 for r in results[:8])
    assert isinstance(results[8], ImageProblem) and results[8].reason == "decode"
    assert loop_thread not in threads and 1 <= len(threads) <= 2
    assert pool.budget.peak <= 200_000 and pool.budget.in_use == 0


def test_the_recipe_sets_the_decode_budget(build, write_recipe, monkeypatch) -> None:
    """With decode threads (one core, or TAGLLM_DECODE=threads), peak decoded memory follows
    `output.decode_pixel_budget`, not the machine: a build holds at most that many pixels at once
    (an image larger than the budget decodes alone)."""
    from builder.images.pool import decode_pool

    monkeypatch.setenv("TAGLLM_DECODE", "threads")

    result = build(write_recipe(), ["output.decode_pixel_budget=5000"])
    pool = decode_pool(5000)
    assert result.stats["ok"] > 0
    assert pool.budget.total == 5000 and 0 < pool.budget.peak <= 5000
    decode_pool()  # back to the default for the rest of the session


def test_worker_processes_prepare_images_without_a_thread_and_survive_a_crash() -> None:
    """The process decoders give what `prepare_image` gives (as-is bytes untouched, re-encoded ones new,
    failures as ImageProblems), start no thread, carry over to the next event loop, and restart a
    worker that dies while images are waiting."""
    import os
    import signal

    from builder.images import prepare_image
    from builder.images.workers import ProcessDecoders

    images = [jpeg(i, (320, 240)) for i in range(6)]
    big = jpeg(9, (640, 480))
    decoders = ProcessDecoders(2)
    threads_before = threading.active_count()

    async def go() -> list:
        jobs = [decoders.prepare(data, 10**7, 10**7) for data in images]
        jobs += [decoders.prepare(b"broken", 10**7, 10**7), decoders.prepare(big, 20_000, 10**7),
                 decoders.prepare(big, 10**7, 1000)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        results = asyncio.run(go())
        assert threading.active_count() == threads_before
        for data, got in zip(images, results[:6]):
            assert got.data == data and (got.width, got.height, got.ext) == (320, 240, "jpg")
        assert isinstance(results[6], ImageProblem) and results[6].reason == "decode"
        small = prepare_image(big, 20_000, 10**7)
        assert results[7].data == small.data and (results[7].width, results[7].height) == (640, 480)
        assert isinstance(results[8], ImageProblem) and results[8].reason == "too_large"

        async def crash() -> list:  # a new loop takes the workers over; one dies with images queued
            jobs = [asyncio.ensure_future(decoders.prepare(data, 10**7, 10**7)) for data in images * 5]
            await asyncio.sleep(0)
            os.kill(decoders.pids()[0], signal.SIGKILL)
            return await asyncio.gather(*jobs)

        again = asyncio.run(crash())
        assert [r.data for r in again] == images * 5
    finally:
        decoders.close()
