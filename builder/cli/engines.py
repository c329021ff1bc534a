"""`tagllm engines`: the engine kinds a recipe may name, what each needs, and whether this machine has it."""

from __future__ import annotations

import json

import click

from builder.recipe.kinds import AUTO_ENGINE, ENGINES, Kind


def _needs(kind: Kind) -> str:
    missing = set(kind.missing())
    if not kind.needs:
        return "needs nothing beyond tagllm: ready"
    listed = ", ".join(f"{m} ({'missing' if m in missing else 'installed'})" for m in kind.needs)
    return f"needs {listed}: " + (kind.install_hint() if missing else "ready")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per engine instead of text.")
def engines(as_json: bool) -> None:
    """List the engine kinds: what each is, what it needs installed, and whether that is installed here.

    \b
    Example:
      tagllm engines
      tagllm build recipes/demo.yaml --engine simulated
    """
    kinds = ENGINES.kinds()
    if as_json:
        for kind in kinds:
            click.echo(json.dumps({"name": kind.name, "about": kind.about, "needs": list(kind.needs),
                                   "missing": kind.missing(), "extra": kind.extra}))
        return
    width = max(len(k.name) for k in kinds) + 2
    for kind in kinds:
        click.echo(f"{kind.name:<{width}}{kind.about}")
        click.echo(f"{'':<{width}}{_needs(kind)}")
    click.echo(f"{AUTO_ENGINE!r} (engine.kind's default) picks sglang when it is installed and a GPU is visible.")
