"""Drafting commands for one's own data: `tagllm vocab init`, `tagllm concepts init`, `tagllm init`."""

from __future__ import annotations

from pathlib import Path

import click

from builder.cli.common import handle_errors
from builder.errors import UserError
from builder.recipe.kinds import HTTP_APIS, model_engines


def _engine_options(fn):
    fn = click.option("--engine", type=click.Choice(model_engines()),
                      help="Let a model propose the draft (default: a plain draft without a model).")(fn)
    fn = click.option("--model", help="Model id or local dir (sglang, transformers) or name (http).")(fn)
    fn = click.option("--server", "servers", multiple=True, help="http engine: server URL.")(fn)
    fn = click.option("--api", type=click.Choice(HTTP_APIS.names()), default="openai",
                      show_default=True, help="http engine protocol.")(fn)
    fn = click.option("--engine-from", "engine_from", type=click.Path(dir_okay=False, path_type=Path),
                      help="Use the engine section of this recipe (instead of --engine/--model/--server).")(fn)
    return fn


def _engine(kind: str | None, model: str | None, servers: tuple[str, ...], api: str, vocab,
            engine_from: Path | None = None):
    """The engine to draft with (from options or a recipe's engine section); None for no model."""
    if kind is None and engine_from is None:
        return None
    from builder.method.authoring import drafting_engine

    return drafting_engine(vocab, engine_from, kind=kind, model=model, servers=list(servers), api=api)


def _write(out: Path, text: str, force: bool) -> None:
    if out.exists() and not force:
        raise UserError(f"{out}: exists; pass --force to replace it or choose another --out")
    out.write_text(text, encoding="utf-8")


def _report(out: Path, review: list[str]) -> None:
    click.echo(f"wrote {out}; review before building:")
    for note in review:
        click.echo(f"  - {note}")


@click.group()
def vocab() -> None:
    """Draft a vocabulary."""


@vocab.command("init")
@click.argument("labels", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("vocab.yaml"), show_default=True)
@click.option("--name", help="Vocabulary name (default: the file's stem).")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@_engine_options
@handle_errors
def vocab_init(labels: Path, out: Path, name: str | None, force: bool, engine: str | None, model: str | None,
               servers: tuple[str, ...], api: str, engine_from: Path | None) -> None:
    """Turn LABELS (one label per line; a line 'name:' opens a group) into a grouped vocabulary.

    \b
    Example:
      tagllm vocab init labels.txt --out vocab.yaml
      tagllm vocab init labels.txt --engine http --server http://gpu1:30000 --model Qwen/Qwen2.5-VL-7B-Instruct
    """
    from builder.recipe.authoring import draft_vocabulary, vocabulary_review, vocabulary_yaml

    plain, draft = draft_vocabulary(labels, name)
    drafter = _engine(engine, model, servers, api, plain, engine_from)
    if drafter is not None:
        from builder.method.authoring import propose_vocabulary
        from builder.recipe.authoring import read_label_list

        proposed = propose_vocabulary(drafter, read_label_list(labels), plain.name)
        if proposed is None:
            click.echo("the model's answer was not usable; writing the plain draft", err=True)
        else:
            how = f"the model ({drafter.name} {drafter.model or ''})".replace(" )", ")")
            draft = type(draft)(vocabulary_yaml(proposed, labels.name, how), vocabulary_review(proposed, how))
    _write(out, draft.text, force)
    _report(out, draft.review)


@click.group()
def concepts() -> None:
    """Draft a concept sheet."""


@concepts.command("init")
@click.argument("vocabulary", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("concepts.yaml"),
              show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@_engine_options
@handle_errors
def concepts_init(vocabulary: Path, out: Path, force: bool, engine: str | None, model: str | None,
                  servers: tuple[str, ...], api: str, engine_from: Path | None) -> None:
    """Write a starter concept sheet for VOCABULARY (one entry per label) to review and calibrate.

    \b
    Example:
      tagllm concepts init vocab.yaml --out concepts.yaml
    """
    from builder.recipe.authoring import concepts_review, concepts_yaml, starter_concepts
    from builder.recipe.vocab import load_vocabulary

    vocab_obj = load_vocabulary(vocabulary)
    sheet, how = starter_concepts(vocab_obj), "tagllm from the vocabulary (no model)"
    drafter = _engine(engine, model, servers, api, vocab_obj, engine_from)
    if drafter is not None:
        from builder.method.authoring import propose_concepts

        sheet, answered = propose_concepts(drafter, vocab_obj, sheet)
        how = f"the model for {answered} of {len(vocab_obj.names)} labels, the vocabulary for the rest"
    _write(out, concepts_yaml(sheet, vocabulary.name), force)
    _report(out, concepts_review(sheet, how))


@click.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("recipe.yaml"),
              show_default=True, help="Recipe file to write.")
@click.option("--vocabulary", type=click.Path(dir_okay=False, path_type=Path), help="Vocabulary YAML to use.")
@click.option("--concepts", "concept_sheet", type=click.Path(dir_okay=False, path_type=Path),
              help="Concept sheet YAML to use.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@handle_errors
def init(folder: Path, out: Path, vocabulary: Path | None, concept_sheet: Path | None, force: bool) -> None:
    """Write a commented starter recipe for the image FOLDER.

    \b
    Example:
      tagllm init photos/ --vocabulary vocab.yaml --concepts concepts.yaml --out recipe.yaml
    """
    from builder.recipe.authoring import draft_recipe

    for p in (vocabulary, concept_sheet):
        if p is not None and not p.is_file():
            raise UserError(f"{p}: file not found")
    draft = draft_recipe(folder, out, vocabulary, concept_sheet)
    _write(out, draft.text, force)
    _report(out, [*draft.review, f"then: tagllm recipe check {out} && tagllm build {out}"])
