"""The hand-written peer of `tagllm build`: the same requests to the same instant engine, one tar.

What a careful person would write in an afternoon to tag a folder with the TagLLM method: read the
metadata, render the questions once, and for every image send the 12 group questions, then one
yes/no question per candidate, to the same simulated engine the build uses (same noise model, same
answers); threshold the scores; write `{key}.jpg` + `{key}.json` to one tar with the standard
library. No cache, no index, no HF dataset, no card, no image validation, no resume. The build's
throughput divided by this peer's is the benchmark's overhead figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any


def _meta(folder: Path) -> dict[str, list[str]]:
    with open(folder / "metadata.jsonl", encoding="utf-8") as f:
        return {row["file_name"]: row["labels"] for row in map(json.loads, f)}


async def _tag(engine: Any, stage1: list[Any], verify: dict[str, Any], image: bytes,
               threshold: float) -> dict[str, Any]:
    from builder.prompts.constraints import ParseError, parse_subset

    asks = [dataclasses.replace(r, image=image) for r in stage1]
    candidates: list[str] = []
    for request, result in zip(asks, await engine.generate(asks)):
        try:
            candidates += parse_subset(result.text, request.constraint.options)
        except ParseError:
            pass
    checks = [dataclasses.replace(verify[c], image=image) for c in candidates]
    scores = {c: r.yes_prob or 0.0 for c, r in zip(candidates, await engine.generate(checks))}
    return {"labels": [c for c, s in scores.items() if s >= threshold], "scores": scores}


async def _run(loaded: Any, folder: Path, out: Path, limit: int, window: int) -> int:
    from builder.engines.registry import engine_from_spec
    from builder.images import image_digest
    from builder.method.candidates import group_requests
    from builder.method.context import TaggingContext
    from builder.method.verify import verify_request

    ctx = TaggingContext(loaded)
    references: dict[str, list[str] | None] = {}  # filled as images are read: what the engine answers from
    engine = engine_from_spec(loaded.recipe.engine, loaded.vocab, references=references)
    stage1 = group_requests(ctx, b"")  # rendered once; the image goes in per image
    verify = {name: verify_request(ctx, name, b"") for name in loaded.vocab.names}
    labels = _meta(folder)
    files = sorted(folder.glob("*.jpg"))[:limit]
    threshold = loaded.recipe.tagging.threshold
    out.mkdir(parents=True, exist_ok=True)
    await engine.start()
    try:
        with tarfile.open(out / "peer-00000.tar", "w") as tar:
            def write(path: Path, image: bytes, record: dict[str, Any]) -> None:
                for ext, data in (("jpg", image), ("json", json.dumps(record).encode())):
                    info = tarfile.TarInfo(f"{path.stem}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, BytesIO(data))

            pending: list[tuple[Path, bytes, asyncio.Task]] = []
            for path in files:
                image = path.read_bytes()
                references[image_digest(image)] = labels.get(path.name, [])
                task = asyncio.ensure_future(_tag(engine, stage1, verify, image, threshold))
                pending.append((path, image, task))
                if len(pending) >= window:
                    done_path, done_image, done_task = pending.pop(0)
                    write(done_path, done_image, await done_task)
            for done_path, done_image, done_task in pending:
                write(done_path, done_image, await done_task)
    finally:
        await engine.close()
    return len(files)


def run_peer(loaded: Any, folder: Path, out: Path, limit: int, window: int = 64) -> int:
    """Tag `limit` images of a generated folder; returns how many were written."""
    return asyncio.run(_run(loaded, folder, out, limit, window))
