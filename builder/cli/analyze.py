"""Commands that measure a dataset: inspect, eval, compare."""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli.common import handle_errors, need
from builder.errors import UserError


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the stats as JSON.")
@handle_errors
def inspect(out: Path, as_json: bool) -> None:
    """Summarize a build: counts, failures by reason, labels, cost.

    \b
    Example:
      tagllm inspect out/demo
    """
    from builder.analysis.inspect import summary

    info = summary(out)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(info["text"])


@click.command("eval")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--reference", help="Human labels elsewhere: another output folder, a recipe, or an image folder "
                                  "with metadata.jsonl (default: the labels carried in the records).")
@click.option("--threshold", type=float, help="Evaluate at this global threshold instead of the built labels.")
@click.option("--thresholds", "thresholds_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Evaluate with these per-label thresholds.")
@click.option("--tune", is_flag=True, help="Tune per-label thresholds on a dev part, measure them on the held-out "
                                         "rest, and write eval/thresholds.yaml.")
@click.option("--tune-dev", type=int, help="Images in the dev part of the tuning split (default: half).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the dev / held-out split.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (default OUT/eval).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@handle_errors
def eval_command(out: Path, reference: str | None, threshold: float | None, thresholds_file: Path | None,
                 tune: bool, tune_dev: int | None, seed: int, report_dir: Path | None, no_plots: bool) -> None:
    """Compare OUT's labels with human labels: CP/CR/CF1, OP/OR/OF1, mAP, per class; report and plots.

    \b
    Example:
      tagllm eval out/demo --tune --tune-dev 12
      tagllm relabel out/demo --thresholds out/demo/eval/thresholds.yaml
    """
    from builder.publish.card import write_card

    evaluate = need("eval", lambda: __import__("builder.analysis.evaluate", fromlist=["run_eval"]))
    if threshold is not None and thresholds_file is not None:
        raise UserError("give --threshold or --thresholds, not both")
    result = evaluate.run_eval(out, reference, threshold if threshold is not None else thresholds_file,
                               tune=tune, report_dir=report_dir, plots=not no_plots, tune_dev=tune_dev, seed=seed)
    o = result["overall"]
    click.echo(f"{result['images']} images vs human labels: " + "  ".join(
        f"{k} {100 * o[k]:.1f}" for k in ("CP", "CR", "CF1", "OP", "OR", "OF1", "mAP") if o.get(k) is not None))
    if "tuned" in result:
        t = result["tuned"]
        click.echo(f"per-label thresholds chosen on {t['dev_images']} dev images; on the {t['held_out_images']} "
                   f"held-out images: OF1 {100 * t['held_out_as_built']['OF1']:.1f} as built -> "
                   f"{100 * t['OF1']:.1f} tuned (dev, in-sample: {100 * t['dev']['OF1']:.1f})")
    for line in evaluate.warnings(result):
        click.echo(f"warning: {line}")
    if result.get("verified"):
        click.echo(result["verified"]["note"])
    click.echo("report: " + ", ".join(result["written"].values()))
    if report_dir is None:
        write_card(out)  # the card gets its evaluation section
    if result.get("notice"):
        click.echo(result["notice"])


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print a Markdown table (default: a terminal table).")
@handle_errors
def compare(runs: tuple[Path, ...], as_json: bool, as_markdown: bool) -> None:
    """One table of several builds: cost per image, metrics against human labels, candidate recall.

    \b
    Example:
      for s in tagllm yes-no all-in-one open-ended; do tagllm build recipes/demo.yaml --strategy $s --out out/$s; done
      tagllm compare out/tagllm out/yes-no out/all-in-one out/open-ended
    """
    from builder.analysis.compare import compare as run_compare
    from builder.analysis.compare import to_json, to_markdown, to_rich

    rows = run_compare(list(runs))
    if as_json:
        click.echo(to_json(rows))
    elif as_markdown:
        click.echo(to_markdown(rows))
    else:
        from rich.console import Console

        Console().print(to_rich(rows))
