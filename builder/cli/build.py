"""Commands that make or remake a dataset: build, relabel, retry-failed."""

from __future__ import annotations

from pathlib import Path

import click

from builder.cli.common import SIM_BANNER, build_overrides, handle_errors, print_summary
from builder.recipe.kinds import FORMATS, HTTP_APIS, STRATEGIES, engine_choices


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--engine", type=click.Choice(engine_choices()),
              help="Backend (overrides engine.kind; `tagllm engines` lists them).")
@click.option("--model", help="Model id or local dir (overrides engine.model).")
@click.option("--server", "servers", multiple=True, help="http engine: server URL (repeat to spread load).")
@click.option("--api", type=click.Choice(HTTP_APIS.names()), help="http engine protocol.")
@click.option("--strategy", type=click.Choice(STRATEGIES.names()))
@click.option("--limit", type=int, help="Tag at most N source items.")
@click.option("--out", help="Output folder, or an object-store URL such as s3://bucket/prefix (overrides output.dir).")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS.names()),
              help="Output format (repeatable).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override any recipe field.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier build in the output folder and start over.")
@click.option("--no-progress", is_flag=True, help="No live progress bar.")
@click.option("--runner", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: shard workers on a Ray cluster (tagllm[ray]).")
@click.option("--address", help="--runner ray: cluster address (e.g. ray://head:10001 or auto); default a local one.")
@click.option("--workers", type=int, help="--runner ray: shard workers (default: one per GPU / server).")
@click.option("--part", metavar="I/N", help="Array jobs: tag only shards k with k % N == I; then `tagllm finalize`.")
@click.option("--wait", is_flag=True, help="Another build writes into the output folder: wait for it, not refuse.")
@handle_errors
def build(recipe: Path, engine: str | None, model: str | None, servers: tuple[str, ...], api: str | None,
          strategy: str | None, limit: int | None, out: str | None, formats: tuple[str, ...],
          sets: tuple[str, ...], overwrite: bool, no_progress: bool, runner: str, address: str | None,
          workers: int | None, part: str | None, wait: bool) -> None:
    """Build a labeled dataset from RECIPE; rerun the same command to resume.

    \b
    Example:
      tagllm build recipes/coco2014.yaml --engine sglang --model Qwen/Qwen2.5-VL-7B-Instruct
      tagllm build recipes/demo.yaml --limit 10 --out out/try --set tagging.threshold=0.6
      tagllm build recipes/coco2014.yaml --runner ray --address auto --workers 8
      tagllm build recipes/coco2014.yaml --part $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
    """
    from builder.errors import RunError
    from builder.recipe.model import load_recipe
    from builder.run.build import failure_report
    from builder.run.runners import make_builder

    loaded = load_recipe(recipe, build_overrides(engine, model, servers, api, limit, out, formats, strategy, sets))
    builder = make_builder(loaded, loaded.recipe.output.dir, runner, part, address, workers,
                           overwrite=overwrite, progress=not no_progress, wait=wait)
    if builder.check().simulated:
        click.echo(SIM_BANNER, err=True)
    result = builder.run()
    if part:
        click.echo(f"part {part} done; when every part is done: tagllm finalize {loaded.recipe.output.dir}")
    print_summary(result)
    problem = failure_report(result, loaded.recipe.output.max_failed_fraction)
    if problem:
        raise RunError(f"build failed: {problem}")


@click.command()
@click.argument("out")
@handle_errors
def finalize(out: str) -> None:
    """After `build --part I/N` jobs: check every shard is complete, then write stats and the card.

    OUT is the output folder, or its object-store URL (s3://bucket/prefix).

    \b
    Example:
      tagllm finalize out/coco2014
      tagllm finalize s3://my-bucket/coco2014
    """
    from builder.run.parts import finalize as run_finalize

    print_summary(run_finalize(out))


@click.command()
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
    from builder.workflows.maintain import relabel as run_relabel

    print_summary(run_relabel(out, threshold, thresholds_file))


@click.command("retry-failed")
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
    from builder.workflows.maintain import retry_failed as run_retry

    print_summary(run_retry(out, list(sets), progress=not no_progress))
