"""Look at a build: `tagllm view` (the gallery) and `tagllm export fiftyone`."""

from __future__ import annotations

import os
import sys
import time
import webbrowser
from pathlib import Path

import click

from builder.cli.common import SIM_BANNER, handle_errors


@click.command("view")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", type=int, default=8765, show_default=True, help="First port to try on 127.0.0.1.")
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve OUT, or only write the gallery.")
@click.option("--open/--no-open", "open_browser", default=True, show_default=True, help="Open a browser tab.")
@click.option("--rebuild", is_flag=True, help="Write the gallery again even when it is up to date.")
@click.option("--sheet-images", type=int, help="Images on the contact sheet (default 12; kept for rebuilds).")
@click.option("--sheet-seed", type=int, help="Seed of the contact sheet's choice (default 0).")
@click.option("--sheet-issues", type=int, help="Top label issues shown first on the sheet (default 3).")
@handle_errors
def view(out: Path, port: int, serve: bool, open_browser: bool, rebuild: bool, sheet_images: int | None,
         sheet_seed: int | None, sheet_issues: int | None) -> None:
    """Show OUT's images with their labels: write OUT/gallery if missing or stale, serve it on 127.0.0.1.

    \b
    The gallery is static: OUT/gallery/index.html also opens from the file system.
    Example:
      tagllm view out/demo
      tagllm view out/demo --no-serve --sheet-images 16 --sheet-issues 4
    """
    from builder.publish.gallery import GALLERY, read_summary
    from builder.publish.gallery.serve import refresh, start_server

    made = refresh(out, rebuild, {"images": sheet_images, "seed": sheet_seed, "issues": sheet_issues})
    summary = made or read_summary(out) or {}
    if made:
        click.echo(f"gallery written in {made['seconds']:.1f} s: {made['images']} images, {made['bytes'] / 1e6:.1f} MB "
                   f"({made['thumbnails']} thumbnails, {made['thumbnail_bytes'] / 1e6:.1f} MB)")
    click.echo(f"gallery: {out / GALLERY / 'index.html'}")
    if summary.get("simulated"):
        click.echo(SIM_BANNER)
    if not serve:
        return
    server, url = start_server(out, port)
    click.echo(f"serving {out} at {url} (Ctrl-C stops)")
    if open_browser and (sys.platform != "linux" or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        webbrowser.open(url)  # a machine without a screen gets the URL only
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


@click.group("export")
def export() -> None:
    """Export a build for other tools."""


@export.command("fiftyone")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace DEST when it is not empty.")
@handle_errors
def export_fiftyone(out: Path, dest: Path, overwrite: bool) -> None:
    """Write OUT as a FiftyOneImageClassificationDataset folder in DEST (machine labels with confidences,
    human labels as ground truth, every candidate), with the script that loads it.

    \b
    Example:
      tagllm export fiftyone out/demo /tmp/demo-fiftyone
      python /tmp/demo-fiftyone/load_fiftyone.py      # where FiftyOne and its MongoDB run
    """
    from builder.analysis.fiftyone_export import export_fiftyone as run_export

    done = run_export(out, dest, overwrite)
    click.echo(f"{done['images']} images -> {dest} (fields: {', '.join(done['fields'].values())}; "
               f"{done['failed_left_out']} failed items left out)")
    click.echo(f"load it where FiftyOne runs: {done['load']}")
    if done["simulated"]:
        click.echo(SIM_BANNER)
