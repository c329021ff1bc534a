"""P3 MLLM work: requests/image and prompt+completion tokens/image of tagllm, yes-no and all-in-one.

Each strategy builds the demo set (recipes/demo.yaml: bundled photos, COCO-80 vocabulary, concept
sheet) with the simulated engine. Every request the engine receives is captured, so the counts
are of what was really sent (parse re-asks included), not of a formula.

Tokens: no real VLM tokenizer is available offline here, so text is counted with the byte-level
BPE of the tiny test VLM (`builder.dev.tiny_vlm`, 600 tokens, trained on this project's prompt
words: a toy, not a production tokenizer; it splits rare words into more pieces than a real one
would). Without `tokenizers` installed, characters are counted instead; the line names the unit.
Prompts are rendered with a ChatML template (what Qwen-family models use) with a 3-token image
placeholder; the image's own tokens are estimated separately (Qwen2.5-VL: one token per 28x28
pixels after resizing) on a `#` line.

Goal: tagllm requests/image <= 1/4 of yes-no requests/image.

    .venv/bin/python tests/benchmarks/bench_mllm_work.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from collections.abc import Callable
from typing import Any

import benchlib as bl

GOAL = 0.25
STRATEGIES = ("tagllm", "yes-no", "all-in-one")


def make_counter() -> tuple[Callable[[str], int], str]:
    """(count(text), unit): the tiny VLM's toy BPE when available, else characters."""
    try:
        from tokenizers import pre_tokenizers  # noqa: F401

        from builder.dev import tiny_vlm

        specials = tiny_vlm._COMMON_SPECIAL + tiny_vlm._ARCH_SPECIAL["qwen2_5_vl"]
        tok = tiny_vlm._train_tokenizer(specials, 600)
        tok.add_special_tokens(specials)
        cache: dict[str, int] = {}

        def count(text: str) -> int:
            n = cache.get(text)
            if n is None:
                n = cache[text] = len(tok.encode(text).ids)
            return n

        return count, "tokens of the tiny test VLM's toy BPE (600-token vocab, builder.dev.tiny_vlm; not a real VLM tokenizer)"
    except Exception as exc:  # noqa: BLE001 - any failure falls back to characters
        return len, f"characters (no tokenizer: {type(exc).__name__})"


def qwen_image_tokens(width: int, height: int, max_pixels: int) -> int:
    """Qwen2.5-VL's image tokens for an image sent at most `max_pixels` (28x28 pixels per token)."""
    scale = min(1.0, math.sqrt(max_pixels / max(1, width * height)))
    w = max(28, round(width * scale / 28) * 28)
    h = max(28, round(height * scale / 28) * 28)
    while w * h > max_pixels:
        w, h = max(28, w - 28), max(28, h - 28)
    return (w // 28) * (h // 28) + 2  # + vision start / end


def run_strategy(strategy: str, limit: int | None, count: Callable[[str], int]) -> dict[str, Any]:
    import jinja2

    from builder.engines.http import DEFAULT_IMAGE_TOKEN, GENERIC_CHAT_TEMPLATE
    from builder.engines.references import source_references
    from builder.engines.registry import engine_from_spec
    from builder.recipe.model import load_recipe
    from builder.run.build import Builder

    out = bl.scratch(f"work-{strategy}")
    overrides = [f"tagging.strategy={strategy}", f"output.dir={out}", "engine.simulation.latency=0"]
    if limit:
        overrides.append(f"source.limit={limit}")
    loaded = load_recipe(bl.DEMO_RECIPE, overrides)
    engine = engine_from_spec(loaded.recipe.engine, loaded.vocab, references=source_references(loaded))
    sent: list[tuple[Any, Any]] = []
    inner = engine._generate_one

    async def capture(request: Any) -> Any:
        result = await inner(request)
        sent.append((request, result))
        return result

    engine._generate_one = capture
    try:
        started = time.perf_counter()
        result = Builder(loaded, out / "o", engine=engine, overwrite=True, progress=False).run()
        seconds = time.perf_counter() - started
        template = jinja2.Environment(autoescape=False, keep_trailing_newline=True).from_string(GENERIC_CHAT_TEMPLATE)
        prompt = completion = chars = 0
        for request, res in sent:
            text = template.render(messages=request.messages, add_generation_prompt=True,
                                   image_token=DEFAULT_IMAGE_TOKEN)
            prompt += count(text)
            chars += len(text)
            completion += count(res.text)
        import pyarrow.parquet as pq

        from builder.publish import layout

        sizes = []
        for path in sorted((out / "o" / layout.INDEX_DIR).glob("*.parquet")):
            table = pq.read_table(path, columns=["width", "height", "usage"])
            for w, h in zip(table.column("width").to_pylist(), table.column("height").to_pylist()):
                if w and h:
                    sizes.append((w, h))
        image_tokens = [qwen_image_tokens(w, h, loaded.recipe.engine.max_pixels) for w, h in sizes]
        images = int(result.stats["images"])
        return {
            "images": images, "ok": int(result.stats["ok"]), "requests": len(sent),
            "stats_requests_per_image": result.stats["cost"]["requests_per_image"],
            "prompt": prompt, "completion": completion, "chars": chars, "seconds": seconds,
            "image_tokens_per_request": sum(image_tokens) / max(1, len(image_tokens)),
            "sim_prompt_per_image": result.stats["cost"]["prompt_tokens_per_image"],
            "sim_completion_per_image": result.stats["cost"]["completion_tokens_per_image"],
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="first 8 demo images only")
    parser.add_argument("--limit", type=int, help="demo images to use (default all)")
    args = parser.parse_args()
    limit = args.limit or (8 if args.quick else None)
    count, unit = make_counter()
    runs = {s: run_strategy(s, limit, count) for s in STRATEGIES}
    per = {s: {k: v / r["images"] for k, v in r.items() if k in ("requests", "prompt", "completion", "chars")}
           for s, r in runs.items()}
    ratio = per["tagllm"]["requests"] / per["yes-no"]["requests"]
    images = runs["tagllm"]["images"]
    raw = "; ".join(
        f"{s} {per[s]['requests']:.2f} req/img, {per[s]['prompt'] + per[s]['completion']:.0f} tok/img "
        f"({per[s]['prompt']:.0f} prompt + {per[s]['completion']:.1f} completion)" for s in STRATEGIES)
    bl.figure("P3 MLLM work (tagllm / yes-no requests per image, COCO-80, demo set, simulated engine)",
              ratio, f"{raw}; {images} images; tokens = text tokens, toy BPE" if "toy" in unit
              else f"{raw}; {images} images; tokens = {unit}", f"<= {GOAL}", ratio <= GOAL)
    bl.info(f"P3 token unit: {unit}; prompts rendered as ChatML with a 3-token image placeholder")
    tok_ratio = (per["tagllm"]["prompt"] + per["tagllm"]["completion"]) / (
        per["yes-no"]["prompt"] + per["yes-no"]["completion"])
    bl.info(f"P3 tagllm / yes-no text tokens per image: {tok_ratio:.3f}; tagllm / all-in-one requests per image: "
            f"{per['tagllm']['requests'] / per['all-in-one']['requests']:.1f}x")
    for s in STRATEGIES:
        r = runs[s]
        img_tok = r["image_tokens_per_request"]
        bl.info(f"P3 {s}: {r['requests']} requests for {r['images']} images ({r['ok']} ok; stats say "
                f"{r['stats_requests_per_image']} req/img); prompt chars/img {per[s]['chars']:.0f}; "
                f"+ image tokens if each request re-sent the image to Qwen2.5-VL (no prefix cache): "
                f"~{img_tok * per[s]['requests']:.0f}/img ({img_tok:.0f} per request at <= 1 MP); "
                f"simulated engine's own estimate {r['sim_prompt_per_image']:.0f} prompt + "
                f"{r['sim_completion_per_image']:.0f} completion tok/img; build {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
