"""`tagllm reproduce`: the paper's experiment (MLLM labels vs human labels downstream) in one command."""

from __future__ import annotations

from pathlib import Path

import click

from builder.cli.common import SIM_BANNER, handle_errors, need
from builder.recipe.kinds import engine_choices


@click.command()
@click.argument("dataset", type=click.Choice(["coco", "objects365"]))
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              help="Dataset root in the official layout (default: the paths in the recipes, data/<dataset>).")
@click.option("--recipes", type=click.Path(file_okay=False, path_type=Path), default=Path("recipes"),
              show_default=True, help="Folder with the gallery recipes.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Default out/reproduce-DATASET.")
@click.option("--engine", type=click.Choice(engine_choices()), help="Backend of both builds (see `tagllm engines`).")
@click.option("--model", help="Model id or local dir (default: the recipe's, Qwen/Qwen2.5-VL-7B-Instruct).")
@click.option("--baseline", type=click.Choice(["all-in-one", "yes-no"]), default="all-in-one", show_default=True)
@click.option("--limit", type=int, help="Label at most N train images.")
@click.option("--test-limit", type=int, help="Test on at most N val images.")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override a field of both builds.")
@click.option("--backbone", default="resnet50", show_default=True, help="timm model name, or tinycnn.")
@click.option("--pretrained", default="true", show_default=True,
              help="true (timm download / local cache), false, or a local weights file.")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--image-size", type=int, help="Default 224 (64 for tinycnn).")
@click.option("--device", help="cuda, cpu, ... (default: cuda when visible).")
@click.option("--workers", type=int, default=4, show_default=True)
@click.option("--no-progress", is_flag=True)
@handle_errors
def reproduce(dataset: str, data: Path | None, recipes: Path, out: Path | None, engine: str | None,
              model: str | None, baseline: str, limit: int | None, test_limit: int | None, sets: tuple[str, ...],
              backbone: str, pretrained: str, epochs: int, batch_size: int, lr: float, image_size: int | None,
              device: str | None, workers: int, no_progress: bool) -> None:
    """Label the train split with an MLLM, train on MLLM vs human labels, print the paper's table.

    \b
    Example:
      tagllm reproduce coco --data /data/coco                        # sglang, Qwen2.5-VL-7B
      tagllm reproduce objects365 --data /data/objects365 --model Qwen/Qwen2.5-VL-3B-Instruct
    """
    from builder.workflows.reproduce import make_config
    from builder.workflows.reproduce import reproduce as run

    flag = {"true": True, "false": False}.get(pretrained.lower(), pretrained)
    cfg = make_config(dataset=dataset, recipes=recipes, data=data, out=out, engine=engine, model=model,
                      baseline=baseline, limit=limit, test_limit=test_limit, sets=list(sets),
                      backbone=backbone, pretrained=flag, epochs=epochs, batch_size=batch_size, lr=lr,
                      image_size=image_size, device=device, workers=workers, progress=not no_progress)
    need("train", lambda: __import__("torch"))
    result = run(cfg)
    click.echo(result["table"])
    click.echo(f"written: {cfg.output() / 'reproduce.md'}, {cfg.output() / 'reproduce.json'}")
    if result["simulated"]:
        click.echo(SIM_BANNER)
