"""Human review where it pays: `tagllm issues` ranks likely label errors, `tagllm review` round-trips them."""

from __future__ import annotations

from pathlib import Path

import click

from builder.cli.common import SIM_BANNER, handle_errors, need


def _issues_lib():
    return need("review", lambda: __import__("cleanlab.multilabel_classification", fromlist=["rank"]))


@click.command("issues")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--reference", help="Human labels elsewhere (output folder, recipe or image folder with metadata.jsonl); "
                                  "default: the labels carried in the records.")
@click.option("--other", "others", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Another build of the same images (e.g. another strategy): its disagreement counts (repeatable).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write (default OUT/issues).")
@handle_errors
def issues(out: Path, reference: str | None, others: tuple[Path, ...], report_dir: Path | None) -> None:
    """Rank likely label errors (machine labels, and human labels when present) for review.

    Writes issues.parquet / issues.csv (one row per image and kind, most suspect first) and report.md.

    \b
    Example:
      tagllm issues out/demo
      tagllm review export out/demo --select issues --budget 20
    """
    _issues_lib()
    from builder.analysis.issues_report import run_issues
    from builder.publish.card import write_card
    from builder.publish.gallery import after_build

    result = run_issues(out, reference, others, report_dir)
    s = result["summary"]
    for kind, info in s["kinds"].items():
        top = [r for r in result["rows"] if r["kind"] == kind][:3]
        click.echo(f"{kind} labels: {info['images']} images ranked, {info['score_over_half']} with issue score > 0.5; "
                   "top: " + ", ".join(f"{r['key']} ({r['issue_score']:.2f})" for r in top))
    click.echo("report: " + ", ".join(result["written"].values()))
    if report_dir is None:
        after_build(out)  # issue ranks in the gallery, top issues on the contact sheet
        write_card(out)  # the card links the report
    if s["simulated"]:
        click.echo(SIM_BANNER)


@click.group()
def review() -> None:
    """Send images to a person (Label Studio) and bring the corrections back into the dataset."""


@review.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--to", "tool", type=click.Choice(["label-studio"]), default="label-studio", show_default=True)
@click.option("--select", type=click.Choice(["issues", "uncertain", "random"]), default="issues", show_default=True,
              help="issues: the label-issue ranking; uncertain: scores closest to the threshold; random: a sample.")
@click.option("--budget", type=int, default=50, show_default=True, help="How many images to send.")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), help="Default OUT/review/label-studio.")
@click.option("--image-form", type=click.Choice(["local-files", "url"]), default="local-files", show_default=True,
              help="How tasks point at images: Label Studio local-files serving, or URLs under --url-prefix.")
@click.option("--document-root", type=click.Path(file_okay=False, path_type=Path),
              help="local-files: Label Studio's LOCAL_FILES_DOCUMENT_ROOT (default: the export folder).")
@click.option("--url-prefix", help="url form: where the export folder will be served, e.g. https://host/review.")
@click.option("--reference", help="Human labels elsewhere, for --select issues.")
@click.option("--seed", type=int, default=0, show_default=True, help="For --select random.")
@handle_errors
def export(out: Path, tool: str, select: str, budget: int, dest: Path | None, image_form: str,
           document_root: Path | None, url_prefix: str | None, reference: str | None, seed: int) -> None:
    """Write a Label Studio import: tasks.json, config.xml (labeling config) and images/.

    \b
    Example:
      tagllm review export out/demo --select issues --budget 20
      LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \\
      LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=$PWD/out/demo/review/label-studio label-studio start
    """
    if select == "issues":
        _issues_lib()
    from builder.analysis.label_studio import export_label_studio

    info = export_label_studio(out, dest, select, budget, image_form, document_root, url_prefix, seed, reference)
    click.echo(f"{info['tasks']} tasks ({select}) -> {info['dest']}/tasks.json, labeling config "
               f"{info['dest']}/config.xml, images in {info['dest']}/images")
    if image_form == "local-files":
        click.echo("serve with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
                   f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={info['document_root']} and add a Local Storage "
                   f"for {info['dest']}/images to the project")


@review.command("import")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("export_file", metavar="EXPORT.json", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reviewer", help="Name to record as the reviewer (default: the Label Studio user id).")
@handle_errors
def import_command(out: Path, export_file: Path, reviewer: str | None) -> None:
    """Apply reviewed labels (Label Studio JSON export) as corrections; data, shards and card are rewritten.

    Corrections are kept in OUT/review/corrections.jsonl, keyed by image digest: they survive
    `relabel`, `retry-failed` and rebuilds. A corrections.jsonl of another output is accepted too.

    \b
    Example:
      tagllm review import out/demo export.json
    """
    from builder.workflows.review import import_review

    info = import_review(out, export_file, reviewer)
    click.echo(f"imported {info['imported']} reviewed images ({info['unannotated']} tasks without annotation); "
               f"{info['shards_rewritten']} shard(s) rewritten")
    click.echo(f"dataset now: {info['reviewed']} images reviewed, {info['changed']} changed "
               f"(+{info['added']} / -{info['removed']} labels); corrections in {info['corrections']}")
    if info["simulated"]:
        click.echo(SIM_BANNER)
