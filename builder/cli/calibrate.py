"""The concept-calibration command (the method's offline step)."""

from __future__ import annotations

from pathlib import Path

import click

from builder.cli.common import build_overrides, handle_errors
from builder.recipe.kinds import ENGINES, HTTP_APIS, STRATEGIES, engine_choices


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dev", "dev", type=int, default=200, show_default=True,
              help="Images the decisions are made on (the dev part).")
@click.option("--held-out", "held_out", type=int,
              help="Images measured but never decided on (default: as many as --dev; 0: none, in-sample only). "
                   "The first dev + held-out labeled items are split, seeded and stratified.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the dev / held-out split.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Propose / re-check rounds.")
@click.option("--worst", type=int, default=5, show_default=True, help="Labels revised per round.")
@click.option("--out", "out_sheet", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the calibrated concept sheet (YAML).")
@click.option("--engine", type=click.Choice(engine_choices()), help="Tagging backend (overrides engine.kind).")
@click.option("--model", help="Tagging model (overrides engine.model).")
@click.option("--server", "servers", multiple=True, help="Tagging http engine: server URL (repeatable).")
@click.option("--api", type=click.Choice(HTTP_APIS.names()), help="Tagging http engine protocol.")
@click.option("--strategy", type=click.Choice(STRATEGIES.names()),
              help="Strategy run on the dev set (one whose yes/no questions use the concept sheet).")
@click.option("--llm-engine", type=click.Choice(ENGINES.names()),
              help="Engine of the LLM that revises entries (default: the tagging engine).")
@click.option("--llm-model", help="Model of that LLM.")
@click.option("--llm-server", "llm_servers", multiple=True, help="http: server URL of that LLM (repeatable).")
@click.option("--llm-api", type=click.Choice(HTTP_APIS.names()), help="http: protocol of that LLM.")
@click.option("--no-tune", is_flag=True, help="Do not tune per-label thresholds on the dev set.")
@click.option("--min-positives", type=int, default=3, show_default=True,
              help="Tune a label's threshold only with at least this many dev positives.")
@click.option("--interactive", is_flag=True, help="Review each proposal (diff + dev metrics): accept, edit, skip.")
@click.option("--work", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the request cache here so a rerun replays answers (default: a temp folder).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override any recipe field.")
@handle_errors
def calibrate(recipe: Path, dev: int, held_out: int | None, seed: int, rounds: int, worst: int, out_sheet: Path,
              engine: str | None, model: str | None, servers: tuple[str, ...], api: str | None, strategy: str | None,
              llm_engine: str | None, llm_model: str | None, llm_servers: tuple[str, ...], llm_api: str | None,
              no_tune: bool, min_positives: int, interactive: bool, work_dir: Path | None,
              sets: tuple[str, ...]) -> None:
    """Calibrate RECIPE's concept sheet on human-labeled dev images; write the revised sheet.

    \b
    Example:
      tagllm calibrate recipes/coco2014.yaml --dev 300 --held-out 1000 --rounds 3 \\
          --out recipes/concepts/coco80.calibrated.yaml --llm-engine http --llm-server http://localhost:30000 \\
          --llm-model Qwen/Qwen2.5-72B-Instruct
      tagllm calibrate recipes/demo.yaml --dev 15 --held-out 10 --strategy yes-no --out /tmp/sheet.yaml \\
          --interactive
    """
    from builder.workflows.calibrate import Settings
    from builder.workflows.calibrate import calibrate as run_calibrate

    settings = Settings(dev=dev, held_out=held_out, seed=seed, rounds=rounds, worst=worst, tune=not no_tune,
                        min_positives=min_positives, interactive=interactive, strategy=strategy,
                        llm_engine=llm_engine, llm_model=llm_model, llm_servers=llm_servers, llm_api=llm_api,
                        work_dir=work_dir)
    overrides = build_overrides(engine, model, servers, api, None, None, (), strategy, sets)
    result = run_calibrate(recipe, settings, out_sheet, overrides=overrides, echo=click.echo)
    click.echo(result.summary())
