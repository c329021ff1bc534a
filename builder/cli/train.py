"""Downstream training: train a classifier on a build, compare machine- vs human-label training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from builder.cli.common import handle_errors, need
from builder.errors import UserError


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--test", "test_source", required=True,
              help="Human-labeled test split: an image folder with metadata.jsonl, or another output folder.")
@click.option("--labels", type=click.Choice(["machine", "reference"]), default="machine", show_default=True,
              help="Train on the machine labels or on the human reference labels.")
@click.option("--backbone", default="tinycnn", show_default=True, help="tinycnn or any timm model name.")
@click.option("--pretrained", is_flag=False, flag_value="true", default=None,
              help="Use pretrained weights found locally (optionally a weights FILE).")
@click.option("--linear-probe", is_flag=True, help="Freeze the backbone; train only the classifier.")
@click.option("--loss", type=click.Choice(["bce", "asl"]), default="bce", show_default=True)
@click.option("--epochs", default=10, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--image-size", type=int, help="Input size (default 64 for tinycnn, 224 otherwise).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Where train.json goes.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--no-progress", is_flag=True)
@handle_errors
def train(out: Path, test_source: str, labels: str, backbone: str, pretrained: str | None, linear_probe: bool,
          loss: str, epochs: int, batch_size: int, lr: float, seed: int, image_size: int | None, device: str,
          run_dir: Path | None, resume: bool, no_progress: bool) -> None:
    """Train a multi-label classifier on OUT and report its mAP on a human-labeled test split.

    \b
    Example:
      tagllm train out/coco2014 --test out/coco2014-val --backbone resnet50 --pretrained --labels machine
      tagllm train out/coco2014 --test out/coco2014-val --backbone resnet50 --pretrained --labels reference
    """
    trainer = need("train", lambda: __import__("builder.analysis.train", fromlist=["train"]))
    weights: bool | str = False if pretrained is None else (True if pretrained == "true" else pretrained)
    config = _config(trainer.TrainConfig, out=out, test=test_source, labels=labels, backbone=backbone,
                     pretrained=weights, linear_probe=linear_probe, loss=loss, epochs=epochs, batch_size=batch_size,
                     lr=lr, seed=seed, image_size=image_size, device=None if device == "auto" else device,
                     run_dir=run_dir, resume=resume, progress=not no_progress)
    result = trainer.train(config)
    m_ap = result["mAP"]
    click.echo(f"test mAP {'n/a' if m_ap is None else f'{100 * m_ap:.2f}'} on {result['test_images']} images "
               f"({labels} labels, {backbone}, seed {seed}); {result['run_dir']}/train.json")
    for line in result["warnings"]:
        click.echo(f"warning: {line}")
    if result.get("notice"):
        click.echo(result["notice"])


def _config(model: Any, **values: Any) -> Any:
    """The pydantic config, its first validation error as one line."""
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg']}") from exc


@click.command("compare-training")
@click.option("--machine", "machine_runs", multiple=True, required=True, help="Run(s) trained on machine labels.")
@click.option("--human", "human_runs", multiple=True, required=True, help="Run(s) trained on human labels.")
@click.option("--baseline", "baseline_runs", multiple=True, help="Run(s) trained on plain-MLLM labels.")
@click.option("--force", is_flag=True, help="Compare runs that differ in test set, settings, seeds or labels "
                                           "(the output lists what was forced).")
@handle_errors
def compare_training_command(machine_runs: tuple[str, ...], human_runs: tuple[str, ...],
                             baseline_runs: tuple[str, ...], force: bool) -> None:
    """mAP ratio of machine-label vs human-label training, and gap closed over a baseline.

    The runs must share test images, vocabulary, settings and seeds; --human runs must be trained on
    reference labels, the others on machine labels. Gap closed needs a baseline below the human arm.

    \b
    Example:
      tagllm compare-training --machine out/a/train/machine-tinycnn-s0 --human out/a/train/reference-tinycnn-s0
    """
    trainer = need("train", lambda: __import__("builder.analysis.train", fromlist=["compare_training"]))
    result = trainer.compare_training(list(machine_runs), list(human_runs), list(baseline_runs) or None, force=force)
    click.echo(json.dumps(result, indent=2))
