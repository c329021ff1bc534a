"""Recipe commands: check a recipe, print the schema."""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli.common import handle_errors


@click.group()
def recipe() -> None:
    """Check recipes and print their schema."""


@recipe.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override any recipe field.")
@click.option("--no-source", is_flag=True, help="Do not open the source (e.g. before its data is downloaded).")
@handle_errors
def recipe_check(file: Path, sets: tuple[str, ...], no_source: bool) -> None:
    """Validate FILE, its vocabulary, concept sheet and templates; open the source's first items and check
    the engine settings (server URLs, API-key variable, packages, model) without sending any request.

    \b
    Example:
      tagllm recipe check recipes/demo.yaml
      tagllm recipe check recipes/coco2014.yaml --no-source   # before downloading COCO
    """
    from builder.engines.registry import check_engine_spec
    from builder.recipe.model import load_recipe
    from builder.run.preflight import check_recipe

    loaded = load_recipe(file, list(sets))
    check_engine_spec(loaded.recipe.engine)  # sglang args are checked here, not on the GPU machine
    notes = check_recipe(loaded, open_source=not no_source)
    v = loaded.vocab
    click.echo(f"{file}: ok ({v.name}: {len(v.names)} labels in {len(v.groups)} groups; "
               f"strategy {loaded.recipe.tagging.strategy}; engine {loaded.recipe.engine.kind})")
    for note in notes:
        click.echo(f"  {note}")


@recipe.command("schema")
def recipe_schema() -> None:
    """Print the recipe's JSON schema (every field with its description).

    \b
    Example:
      tagllm recipe schema > recipe.schema.json
    """
    from builder.recipe.model import recipe_schema as schema

    click.echo(json.dumps(schema(), indent=2))
