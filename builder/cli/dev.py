"""Developer commands: the simulated server, tiny models, synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from builder.cli.common import SIM_BANNER, handle_errors


@click.command("serve-sim")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=30000, show_default=True, type=int)
@click.option("--latency", default=0.0, show_default=True, help="Seconds each request takes.")
@click.option("--capacity", default=0, show_default=True,
              help="Requests processed at once (0 = unbounded); the rest queue.")
@click.option("--fault-5xx", default=0.0, show_default=True, help="Rate of 500/503 answers.")
@click.option("--fault-timeout", default=0.0, show_default=True, help="Rate of requests that hang.")
@click.option("--fault-drop", default=0.0, show_default=True, help="Rate of dropped connections.")
@click.option("--fault-malformed", default=0.0, show_default=True, help="Rate of bodies that are not JSON.")
@click.option("--fault-empty", default=0.0, show_default=True, help="Rate of empty answers.")
@click.option("--fault-violate", default=0.0, show_default=True, help="Rate of answers that break the constraint.")
@click.option("--hang-seconds", default=30.0, show_default=True, help="How long a 'timeout' fault hangs.")
@click.option("--seed", default=0, show_default=True, help="Seed of the fault draws.")
@click.option("--model-name", default="tagllm-sim", show_default=True, help="Model name the server reports.")
@click.option("--prefix-cache-images", default=256, show_default=True,
              help="Images a prefix cache would hold; /stats counts image prefix hits against them.")
@click.option("--api-key-env", help="Require the API key held in this environment variable.")
@handle_errors
def serve_sim(recipe: Path, host: str, port: int, api_key_env: str | None, **options: Any) -> None:
    """Serve SGLang's /generate and OpenAI's /v1/chat/completions from the simulated engine.

    RECIPE gives the vocabulary and the human labels the answers come from. Use it to dry-run a
    cluster configuration, or to test clients, with latency, capacity and injected faults.

    \b
    Example:
      tagllm serve-sim recipes/demo.yaml --port 30000 --latency 0.05 --capacity 64 --fault-5xx 0.05
      tagllm build recipes/demo.yaml --engine http --server http://127.0.0.1:30000 --api openai
    """
    from builder.dev.serve_sim import serve

    click.echo(SIM_BANNER, err=True)
    serve(recipe, host=host, port=port, api_key_env=api_key_env, **options)


@click.group()
def dev() -> None:
    """Developer helpers: tiny models and synthetic data for tests and demos."""


@dev.command("make-tiny-vlm")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--arch", type=click.Choice(["llava", "idefics3", "qwen2_5_vl"]), default="llava", show_default=True)
@click.option("--seed", default=0, show_default=True)
@handle_errors
def make_tiny_vlm(out_dir: Path, arch: str, seed: int) -> None:
    """Write a tiny randomly initialised VLM to OUT_DIR (needs tagllm[hf]); its answers are noise.

    \b
    Example:
      tagllm dev make-tiny-vlm /tmp/tiny --arch qwen2_5_vl
      tagllm build recipes/demo.yaml --engine transformers --model /tmp/tiny --out out/tiny
    """
    from builder.dev.tiny_vlm import make_tiny_vlm as make

    click.echo(make(out_dir, arch=arch, seed=seed))


@dev.command("make-synthetic")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", default=1000, show_default=True, help="Training images.")
@click.option("--n-test", default=300, show_default=True, help="Test images (human-labeled split).")
@click.option("--seed", default=0, show_default=True)
@click.option("--size", default=64, show_default=True, help="Image side in pixels.")
@click.option("--set", "sets", multiple=True, metavar="RATE=VALUE", help="Simulated noise, e.g. miss_rate=0.4.")
@handle_errors
def make_synthetic(out_dir: Path, n: int, n_test: int, seed: int, size: int, sets: tuple[str, ...]) -> None:
    """Write synthetic scenes with known labels (train + test), a vocabulary and a recipe.

    \b
    Example:
      tagllm dev make-synthetic /tmp/syn --n 600 --set miss_rate=0.3
      tagllm build /tmp/syn/recipe.yaml && tagllm train /tmp/syn/out --test /tmp/syn/test
    """
    from builder.dev.synthetic import make_synthetic as make
    from builder.recipe.model import apply_overrides

    simulation = apply_overrides({}, list(sets), "--set")
    made = make(out_dir, n=n, seed=seed, n_test=n_test, size=size, simulation=simulation or None)
    click.echo(f"recipe: {made.recipe}")
