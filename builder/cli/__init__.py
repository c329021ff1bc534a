"""The `tagllm` command line: thin Click commands, one module per area, each calling one library function."""

from __future__ import annotations

import click

from builder import __version__
from builder.cli import (
    analyze,
    author,
    build,
    calibrate,
    dev,
    engines,
    hierarchy,
    publish,
    recipe,
    reproduce,
    review,
    train,
)
from builder.cli.view import export, view


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="tagllm")
def main() -> None:
    """Build multi-label image datasets labeled by multimodal LLMs (the TagLLM method)."""


for command in (build.build, build.finalize, build.relabel, build.retry_failed, calibrate.calibrate, analyze.inspect,
                analyze.eval_command, analyze.compare, train.train, train.compare_training_command,
                publish.push, publish.card, dev.serve_sim, dev.dev, recipe.recipe, engines.engines, author.vocab,
                author.concepts, author.init, review.issues, review.review, reproduce.reproduce, view, export):
    main.add_command(command)
author.vocab.add_command(hierarchy.vocab_from_hierarchy)  # `tagllm vocab from-hierarchy`

recipe.recipe.add_command(author.init)  # also `tagllm recipe init`

if __name__ == "__main__":
    main()
