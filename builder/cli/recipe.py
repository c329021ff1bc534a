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
@handle_errors
def recipe_check(file: Path, sets: tuple[str, ...]) -> None:
    """Validate FILE (and the vocabulary and concept sheet it names) without running anything.

    \b
    Example:
      tagllm recipe check recipes/coco2014.yaml
    """
    from builder.method import TaggingContext
    from builder.recipe.model import load_recipe

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
    from builder.recipe.model import recipe_schema as schema

    click.echo(json.dumps(schema(), indent=2))
