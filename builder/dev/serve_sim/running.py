"""Running serve-sim: from a recipe, in a loop, in the foreground (`tagllm serve-sim`) or a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from builder.dev.serve_sim.options import SimOptions
from builder.dev.serve_sim.oracle import build_oracle
from builder.dev.serve_sim.server import SIM_KEY, SimServer
from builder.engines.simulated import NoiseModel, SimulatedModel


def make_server(recipe: str | Path | Any | None = None, vocab: Any = None,
                oracle: dict[str, list[str] | None] | None = None, noise: NoiseModel | None = None,
                **options: Any) -> SimServer:
    """A SimServer from a recipe (its vocabulary, noise model and source labels) or explicit parts."""
    if recipe is not None:
        from builder.recipe.model import LoadedRecipe, load_recipe

        loaded = recipe if isinstance(recipe, LoadedRecipe) else load_recipe(recipe)
        vocab = vocab or loaded.vocab
        if noise is None:
            sim = loaded.recipe.engine.simulation.model_dump()
            noise = NoiseModel(**{k: v for k, v in sim.items() if k in NoiseModel.__dataclass_fields__})
        if oracle is None:
            oracle = build_oracle(loaded)
    return SimServer(SimulatedModel(vocab, noise), oracle, SimOptions(**options))


async def start_server(recipe: str | Path | Any | None = None, host: str = "127.0.0.1", port: int = 30000,
                       *, vocab: Any = None, oracle: dict[str, list[str] | None] | None = None,
                       noise: NoiseModel | None = None, **options: Any) -> web.AppRunner:
    """Start serving in the running event loop; returns the aiohttp runner (`await runner.cleanup()`).

    The bound address is in `runner.addresses` (port 0 picks a free port). The SimServer is at
    `runner.app[SIM_KEY]`.
    """
    server = make_server(recipe, vocab=vocab, oracle=oracle, noise=noise, **options)
    app = server.app()
    app[SIM_KEY] = server
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def serve(recipe_path: str | Path | None, host: str = "127.0.0.1", port: int = 30000,
          api_key_env: str | None = None, **options: Any) -> None:
    """Serve until interrupted (Ctrl-C). What `tagllm serve-sim` calls.

    `options` are SimOptions fields (latency, capacity, fault_* rates, hang_seconds, seed,
    model_name). With `api_key_env`, requests must carry that variable's value as a Bearer token.
    """
    if api_key_env:
        import os

        from builder.errors import UserError

        key = os.environ.get(api_key_env)
        if not key:
            raise UserError(f"serve-sim: environment variable {api_key_env} (the API key) is not set")
        options["api_key"] = key

    async def main() -> None:
        runner = await start_server(recipe_path, host, port, **options)
        bound = runner.addresses[0] if runner.addresses else (host, port)
        server: SimServer = runner.app[SIM_KEY]
        print(f"tagllm serve-sim: SIMULATED answers (human labels + seeded noise) at http://{bound[0]}:{bound[1]} "
              f"({len(server.oracle)} images in the oracle)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


@contextlib.contextmanager
def running_sim_server(recipe: str | Path | Any | None = None, *, host: str = "127.0.0.1", port: int = 0,
                       vocab: Any = None, oracle: dict[str, list[str] | None] | None = None,
                       noise: NoiseModel | None = None, **options: Any) -> Iterator[str]:
    """Run a serve-sim in a background thread on a free port; yields its base URL.

    `with running_sim_server(recipe="recipes/demo.yaml", fault_5xx=0.1) as url: ...`
    Counters are at `GET {url}/stats`.
    """
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["runner"] = loop.run_until_complete(
                start_server(recipe, host, port, vocab=vocab, oracle=oracle, noise=noise, **options))
        except BaseException as exc:  # surface start errors in the calling thread
            box["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        try:
            loop.run_until_complete(box["runner"].cleanup())
        finally:
            pending = asyncio.all_tasks(loop)  # handlers still hanging (fault_timeout) or queued
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=run, name="tagllm-serve-sim", daemon=True)
    thread.start()
    started.wait(timeout=60)
    if "error" in box:
        raise box["error"]
    runner = box["runner"]
    bound = runner.addresses[0]
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
