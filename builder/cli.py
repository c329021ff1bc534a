"""The `tagllm` command line: each command parses its options, calls one library function, reports."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from builder import __version__
from builder.errors import RunError, UserError

SIM_BANNER = ("SIMULATED ENGINE: labels are the source's human labels plus seeded noise, not model output. "
              "Use them to test the pipeline only.")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into one line on stderr and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (UserError, RunError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: finished shards and cached answers are kept; rerun to resume", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="tagllm")
def main() -> None:
    """Build multi-label image datasets labeled by multimodal LLMs (the TagLLM method)."""


def _build_overrides(engine: str | None, model: str | None, servers: tuple[str, ...], api: str | None,
                     limit: int | None, out: str | None, formats: tuple[str, ...], strategy: str | None,
                     sets: tuple[str, ...]) -> list[str]:
    overrides = []
    if servers and not engine:
        engine = "http"
    pairs = {"engine.kind": engine, "engine.model": model, "engine.api": api, "source.limit": limit,
             "output.dir": out, "tagging.strategy": strategy}
    overrides += [f"{k}={v}" for k, v in pairs.items() if v is not None]
    if servers:
        overrides.append("engine.servers=" + json.dumps(list(servers)))
    if formats:
        overrides.append("output.formats=" + json.dumps(list(formats)))
    return overrides + list(sets)


def print_summary(result: Any) -> None:
    s = result.stats
    cost = s.get("cost", {})
    reasons = ", ".join(f"{k} {v}" for k, v in s.get("failed_by_reason", {}).items()) or "none"
    click.echo(f"output: {result.out}")
    click.echo(f"images {s['images']}: ok {s['ok']}, failed {s['failed']} ({reasons})")
    click.echo(f"requests/image {cost.get('requests_per_image')}, sent this run {result.sent}, "
               f"shards {result.shards} ({result.skipped_shards} kept from an earlier run)")
    top = list(s.get("label_counts", {}).items())[:8]
    if top:
        click.echo("most frequent labels: " + ", ".join(f"{k} {v}" for k, v in top))
    if result.simulated:
        click.echo(SIM_BANNER)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--engine", type=click.Choice(["auto", "sglang", "http", "transformers", "simulated"]),
              help="Backend (overrides engine.kind).")
@click.option("--model", help="Model id or local dir (overrides engine.model).")
@click.option("--server", "servers", multiple=True, help="http engine: server URL (repeat to spread load).")
@click.option("--api", type=click.Choice(["http-sglang", "openai", "vllm"]), help="http engine protocol.")
@click.option("--strategy", type=click.Choice(["tagllm", "yes-no", "all-in-one", "open-ended"]))
@click.option("--limit", type=int, help="Tag at most N source items.")
@click.option("--out", help="Output folder (overrides output.dir).")
@click.option("--format", "formats", multiple=True, type=click.Choice(["webdataset", "hf"]),
              help="Output format (repeatable).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override any recipe field.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier build in the output folder and start over.")
@click.option("--no-progress", is_flag=True, help="No live progress bar.")
@handle_errors
def build(recipe: Path, engine: str | None, model: str | None, servers: tuple[str, ...], api: str | None,
          strategy: str | None, limit: int | None, out: str | None, formats: tuple[str, ...],
          sets: tuple[str, ...], overwrite: bool, no_progress: bool) -> None:
    """Build a labeled dataset from RECIPE; rerun the same command to resume.

    \b
    Example:
      tagllm build recipes/coco2014.yaml --engine sglang --model Qwen/Qwen2.5-VL-7B-Instruct
      tagllm build recipes/demo.yaml --limit 10 --out out/try --set tagging.threshold=0.6
    """
    from builder.recipe import load_recipe
    from builder.run import Builder

    loaded = load_recipe(recipe, _build_overrides(engine, model, servers, api, limit, out, formats, strategy, sets))
    builder = Builder(loaded, Path(loaded.recipe.output.dir), overwrite=overwrite, progress=not no_progress)
    if builder.check().simulated:
        click.echo(SIM_BANNER, err=True)
    result = builder.run()
    print_summary(result)


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private/--public", default=True, show_default=True, help="Visibility of a new repo.")
@click.option("--allow-simulated", is_flag=True, help="Publish even though the labels are simulated.")
@handle_errors
def push(out: Path, repo_id: str, private: bool, allow_simulated: bool) -> None:
    """Upload OUT (data, card, recipe, concept sheet) to the Hub dataset REPO_ID.

    \b
    The token comes from HF_TOKEN or `huggingface-cli login`.
    Example:
      tagllm push out/coco2014 my-org/coco2014-tagllm --private
    """
    from builder.hub import push as push_folder

    click.echo(push_folder(out, repo_id, private=private, allow_simulated=allow_simulated))


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--template", type=click.Path(dir_okay=False, path_type=Path), help="Your own Jinja card template.")
@handle_errors
def card(out: Path, template: Path | None) -> None:
    """Re-render the dataset card OUT/README.md (after eval, or with your own template).

    \b
    Example:
      tagllm card out/demo
    """
    from builder.card import write_card

    click.echo(write_card(out, template))


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the stats as JSON.")
@handle_errors
def inspect(out: Path, as_json: bool) -> None:
    """Summarize a build: counts, failures by reason, labels, cost.

    \b
    Example:
      tagllm inspect out/demo
    """
    from builder.inspect import summary

    info = summary(out)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(info["text"])


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--threshold", type=float, help="New global score threshold.")
@click.option("--thresholds", "thresholds_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Per-label thresholds YAML (e.g. from `tagllm eval --tune`).")
@handle_errors
def relabel(out: Path, threshold: float | None, thresholds_file: Path | None) -> None:
    """Re-threshold OUT from the cached answers: no engine call, every file rewritten.

    \b
    Example:
      tagllm relabel out/demo --threshold 0.7
      tagllm relabel out/demo --thresholds out/demo/eval/thresholds.yaml
    """
    from builder.maintain import relabel as run_relabel

    print_summary(run_relabel(out, threshold, thresholds_file))


@main.command("retry-failed")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe field.")
@click.option("--no-progress", is_flag=True, help="No live progress bar.")
@handle_errors
def retry_failed(out: Path, sets: tuple[str, ...], no_progress: bool) -> None:
    """Re-run only the failed items of OUT (their shards are rewritten; ok answers come from the cache).

    \b
    Example:
      tagllm retry-failed out/coco2014 --set engine.timeout=300
    """
    from builder.maintain import retry_failed as run_retry

    print_summary(run_retry(out, list(sets), progress=not no_progress))


@main.group()
def recipe() -> None:
    """Check recipes and print their schema."""


@recipe.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override any recipe field.")
@handle_errors
def recipe_check(file: Path, sets: tuple[str, ...]) -> None:
    """Validate FILE (and the vocabulary and concept sheet it names) without running anything.

    \b
    Example:
      tagllm recipe check recipes/coco2014.yaml
    """
    from builder.recipe import load_recipe
    from builder.tagger import TaggingContext

    loaded = load_recipe(file, list(sets))
    TaggingContext(loaded)  # templates parse
    v = loaded.vocab
    click.echo(f"{file}: ok ({v.name}: {len(v.names)} labels in {len(v.groups)} groups; "
               f"strategy {loaded.recipe.tagging.strategy}; engine {loaded.recipe.engine.kind})")


@recipe.command("schema")
def recipe_schema() -> None:
    """Print the recipe's JSON schema (every field with its description).

    \b
    Example:
      tagllm recipe schema > recipe.schema.json
    """
    from builder.recipe import recipe_schema as schema

    click.echo(json.dumps(schema(), indent=2))


if __name__ == "__main__":
    main()
