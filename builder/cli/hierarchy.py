"""`tagllm vocab from-hierarchy`: a grouped vocabulary from a dataset's class list and hierarchy."""

from __future__ import annotations

from pathlib import Path

import click

from builder.cli.common import handle_errors


@click.command("from-hierarchy")
@click.argument("classes", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("hierarchy", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Vocabulary YAML to write.")
@click.option("--name", default="openimages600", show_default=True, help="Vocabulary name.")
@click.option("--max-group", default=60, show_default=True, help="Largest group (one stage-1 question each).")
@click.option("--min-group", default=6, show_default=True, help="Smaller branches go to the 'other' groups.")
@handle_errors
def vocab_from_hierarchy(classes: Path, hierarchy: Path, out: Path, name: str, max_group: int, min_group: int) -> None:
    """Group the classes of CLASSES (LabelName,DisplayName CSV) by the branches of HIERARCHY (JSON).

    \b
    Example (Open Images boxable classes):
      tagllm vocab from-hierarchy oidv7-class-descriptions-boxable.csv bbox_labels_600_hierarchy.json \\
          --out recipes/vocab/openimages600.yaml
    """
    from builder.recipe.hierarchy import (
        load_hierarchy,
        read_class_descriptions,
        vocabulary_from_hierarchy,
        write_vocabulary,
    )

    vocab = vocabulary_from_hierarchy(read_class_descriptions(classes), load_hierarchy(hierarchy), max_group,
                                      min_group, name=name)
    note = (f"Classes of {classes.name}, grouped by the branches of {hierarchy.name} "
            f"(tagllm vocab from-hierarchy, max {max_group}, min {min_group} per group).\n"
            "Display names as labels; descriptions and synonyms are for a person or the concept sheet to add.")
    write_vocabulary(vocab, out, note)
    click.echo(f"{out}: {len(vocab.names)} labels in {len(vocab.groups)} groups")
