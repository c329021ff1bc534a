"""One build over a Ray cluster: a pool of shard-worker actors, each owning one engine.

Ray Core actors, not Ray Data: the shard is the unit of commit and resume, so a worker must write
a whole shard with the writers' protocol (temporary names, rename, stats json last) into the one
output folder. Ray Data hands out blocks of its own choosing and owns the writes, which would cut
our shards apart and bypass the commit marker. Here the driver hands out shard indexes, each
worker reads its shard straight from the source (`Source.shard`), tags it through its own engine
(an in-process sglang engine on `num_gpus = tp_size`, or an http client to its own server) and
commits it. A worker that dies is restarted by Ray and the shard's call retried; the new process
overwrites the dead one's temporary files and replays the answers it had cached, so the output
has no duplicate and no missing record. The driver merges shard stats and writes the card.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from builder import storage
from builder.ask.cache_files import open_cache
from builder.engines.references import source_references
from builder.engines.registry import open_engine
from builder.errors import RunError, UserError
from builder.method import TaggingContext
from builder.publish import layout
from builder.publish.corrections import REVIEW_DIR
from builder.publish.store import StoreOutput
from builder.publish.writers import make_writers
from builder.recipe.model import LoadedRecipe
from builder.run.build import Builder, BuildResult, Checked
from builder.run.progress import Reporter
from builder.run.remote import uploader
from builder.run.shards import ShardChoice, plan_shards
from builder.run.tagging import Tagging, tag_shards
from builder.sources import open_source

NAMESPACE = "tagllm"
SHARDS_PER_WORKER = 2  # two shards in flight per worker: its engine never waits at a shard end
RESUBMITS = 3


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UserError("--runner ray needs Ray: pip install -e '.[ray]' in a checkout") from exc
    return ray


class ShardWorker:
    """Lives in a Ray actor: tags whole shards through one engine and commits them."""

    def __init__(self, loaded: LoadedRecipe, out: str, slot: int, servers: list[str], window: int | None):
        self.loaded, self.slot, self.servers, self.window = loaded, slot, servers, window
        # An object-store output: this worker's own working folder, its shards put in the store at commit.
        self.store = StoreOutput.open(out) if storage.is_url(out) else None
        self.out = self.store.work if self.store is not None else Path(out)
        self.ready: tuple[Tagging, Any] | None = None  # (what this process tags with, the source)
        self.lock: asyncio.Lock | None = None

    async def warm(self) -> int:
        """Start the engine and load the writers before the first shard; returns this process's id."""
        await self._start()
        make_writers(self.out, self.loaded.vocab, self.loaded.recipe.output.formats)  # heavy imports happen here
        return os.getpid()

    async def _start(self) -> tuple[Tagging, Any]:
        self.lock = self.lock or asyncio.Lock()
        async with self.lock:
            if self.ready is None:
                recipe = self.loaded.recipe
                spec = recipe.engine.model_copy(update={"servers": self.servers}) if self.servers else recipe.engine
                references = functools.partial(source_references, self.loaded)
                engine = open_engine(spec, self.loaded.vocab, references=references)
                await engine.start()
                if self.store is not None:  # what a worker reads: earlier runs' answers, reviewed labels
                    for folder in (layout.CACHES_DIR, REVIEW_DIR):  # (a shard's mark: when it is handed over)
                        self.store.pull_dir(folder)
                name = f"worker-{self.slot:03d}"
                cache = open_cache(self.out, name)
                tagging = Tagging.open(self.loaded, self.out, engine, cache, TaggingContext(self.loaded),
                                       engine.describe(), self.window)
                tagging.by = f"worker {self.slot}"
                source = open_source(recipe.source, self.loaded.vocab, self.loaded.base_dir)
                tagging.upload = uploader(self.store, cache, name, source, recipe.output.samples_per_shard)
                self.ready = (tagging, source)
        return self.ready

    async def tag_shard(self, shard: int) -> dict[str, Any]:
        """Tag and commit one shard (kept when complete: a retried call); returns its stats and this process's id."""
        tagging, source = await self._start()
        if self.store is not None:
            self.store.pull_shard(shard)  # committed by a worker that died before answering: kept
        plan = await tag_shards(tagging, source, ShardChoice(shards=(shard,)))
        if tagging.upload is not None:
            await tagging.upload.committed(shard)  # the driver counts the shard done: its mark must be up
        stats = plan.committed[0] if plan.committed else layout.read_json(layout.shard_stats_path(self.out, shard))
        return {"shard": shard, "pid": os.getpid(), "stats": stats}

    async def close(self) -> None:
        if self.ready is not None:
            tagging, _ = self.ready
            await tagging.engine.close()
            tagging.asker.cache.close()
            if tagging.upload is not None:
                tagging.upload.close()
            self.ready = None
        if self.store is not None:
            self.store.close()


def worker_servers(servers: list[str], workers: int, slot: int) -> list[str]:
    """One server per worker when there are enough (round robin), so each worker loads its own server."""
    if not servers:
        return []
    if len(servers) >= workers:
        return servers[slot::workers]
    return [servers[slot % len(servers)]]


class RayBuilder(Builder):
    """The driver: checks, prepares the folder, hands shards to workers, then writes totals and card."""

    def __init__(self, loaded: LoadedRecipe, out: Path, address: str | None = None, workers: int | None = None,
                 worker_cpus: float = 1.0, **kwargs: Any):
        super().__init__(loaded, out, **kwargs)
        self.address, self.workers, self.worker_cpus = address, workers, worker_cpus
        self.worker_pids: list[int] = []  # filled once the workers run (tests kill one by pid)
        self.commits: list[tuple[int, int]] = []  # (shard, pid of the process that committed it)
        self.sent = 0
        self.timing: dict[str, float] = {}  # seconds: workers starting, then shards being tagged

    def _locked_run(self) -> BuildResult:
        ray = import_ray()
        checked = self._recheck()
        started_here = not ray.is_initialized()
        if started_here:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if not self.address:  # a private local cluster; keep it small
                options.update(num_cpus=max(2, int((self.workers or 2) * self.worker_cpus)),
                               object_store_memory=200 * 1024 * 1024)
            ray.init(address=self.address, **options)
        try:
            return self._run(ray, checked)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray: Any, checked: Checked) -> BuildResult:
        engine_info = checked.engine.describe()  # the driver's engine is never started: read once
        manifest = self._prepare_out(checked, engine_info)
        per_shard = self.recipe.output.samples_per_shard
        count = checked.source.total()
        if count is None:  # a stream of unknown length: count it once (reads every item)
            count = sum(1 for _ in checked.source)
        total = -(-count // per_shard)
        reporter = Reporter(total=count, show=self.progress)
        try:
            plan = plan_shards(self.out, checked.source, per_shard, ShardChoice(shards=tuple(range(total))),
                               reporter.skip)
            if plan.todo:
                self._dispatch(ray, plan.todo, reporter)
        finally:
            reporter.close()
        return self._complete(manifest, total, plan.skipped, self.sent, engine_info)

    def _worker_count(self, ray: Any) -> int:
        if self.workers:
            return self.workers
        spec = self.recipe.engine
        if spec.servers:
            return len(spec.servers)
        if spec.kind == "sglang":
            return max(1, int(ray.cluster_resources().get("GPU", 0)) // int(spec.args.get("tp_size", 1)))
        return max(1, min(8, int(ray.cluster_resources().get("CPU", 1))))

    def _start_workers(self, ray: Any) -> list[Any]:
        spec = self.recipe.engine
        count = self._worker_count(ray)
        gpus = float(spec.args.get("tp_size", 1)) if spec.kind == "sglang" else 0.0
        workers = []
        for slot in range(count):
            name = self._retire(ray, slot)
            actor = ray.remote(ShardWorker).options(
                name=name, namespace=NAMESPACE, num_cpus=self.worker_cpus, num_gpus=gpus, max_restarts=3,
                max_task_retries=3, max_concurrency=SHARDS_PER_WORKER + 2)
            workers.append(actor.remote(self.loaded, self._target(), slot,
                                        worker_servers(list(spec.servers), count, slot), self.window))
        self.worker_pids = ray.get([w.warm.remote() for w in workers])
        return workers

    def _target(self) -> str:
        """Where workers write: the object-store URL, or the shared folder's absolute path."""
        return self.store.url if self.store is not None else str(self.out.resolve())

    def _retire(self, ray: Any, slot: int) -> str:
        """The worker's name for this output folder; a worker of a dead driver still running under it is killed.

        Ray kills a dead driver's actors, but not at once: without this, a rerun could start while
        the old workers still write the same shards.
        """
        import hashlib

        name = f"tagllm-{hashlib.sha256(self._target().encode()).hexdigest()[:12]}-{slot}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                old = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                return name
            ray.kill(old, no_restart=True)
            time.sleep(0.5)
        raise RunError(f"a Ray worker named {name} (an earlier build of {self._target()}) does not go away")

    def _dispatch(self, ray: Any, todo: list[int], reporter: Reporter) -> None:
        """Keep every worker busy with SHARDS_PER_WORKER shards until all are committed."""
        from ray.exceptions import RayActorError, RayTaskError

        started = time.perf_counter()
        workers = self._start_workers(ray)
        self.timing["workers_start"] = time.perf_counter() - started
        started = time.perf_counter()
        queue, inflight, tries = deque(todo), {}, dict.fromkeys(todo, 0)
        alive = set(range(len(workers)))
        try:
            while queue or inflight:
                for slot in sorted(alive):
                    while queue and sum(1 for _, s in inflight.values() if s == slot) < SHARDS_PER_WORKER:
                        shard = queue.popleft()
                        inflight[workers[slot].tag_shard.remote(shard)] = (shard, slot)
                if not inflight:
                    raise RunError("every Ray worker died; rerun the same command to resume")
                ready, _ = ray.wait(list(inflight), num_returns=1)
                shard, slot = inflight.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except (RayActorError, RayTaskError) as exc:
                    tries[shard] += 1
                    if isinstance(exc, RayActorError):
                        alive.discard(slot)
                    if tries[shard] > RESUBMITS:
                        raise RunError(f"shard {shard} failed {tries[shard]} times on Ray workers: {exc}") from exc
                    queue.appendleft(shard)
                    continue
                self.commits.append((shard, result["pid"]))
                self.sent += int((result["stats"] or {}).get("sent", 0))
                reporter.shard_done(result["stats"] or {})
            self.timing["tagging"] = time.perf_counter() - started
        finally:
            for w in workers:
                try:
                    ray.get(w.close.remote(), timeout=60)
                except Exception:  # noqa: BLE001 - a dead worker has nothing left to close
                    pass
                ray.kill(w)
