"""Commands that publish a dataset: push to the Hub, re-render the card."""

from __future__ import annotations

from pathlib import Path

import click

from builder.cli.common import handle_errors


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private/--public", default=True, show_default=True, help="Visibility of a new repo.")
@click.option("--allow-simulated", is_flag=True, help="Publish even though the labels are simulated.")
@handle_errors
def push(out: Path, repo_id: str, private: bool, allow_simulated: bool) -> None:
    """Upload OUT (data, card, recipe, concept sheet) to the Hub dataset REPO_ID.

    \b
    The token comes from HF_TOKEN or `hf auth login`. The card's snippets are rewritten to load REPO_ID.
    Example:
      tagllm push out/coco2014 my-org/coco2014-tagllm --private
    """
    from builder.publish.hub import push as push_folder

    click.echo(push_folder(out, repo_id, private=private, allow_simulated=allow_simulated))


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--template", type=click.Path(dir_okay=False, path_type=Path), help="Your own Jinja card template.")
@handle_errors
def card(out: Path, template: Path | None) -> None:
    """Re-render the dataset card OUT/README.md (after eval, or with your own template).

    \b
    Example:
      tagllm card out/demo
    """
    from builder.publish.card import write_card

    click.echo(write_card(out, template))
