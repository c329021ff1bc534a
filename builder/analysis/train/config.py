"""The settings of one training run, as one validated object (like the recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TINY = "tinycnn"
# Settings two runs must share for their test mAPs to be compared (besides test set and seeds).
COMPARABLE = ("backbone", "pretrained", "linear_probe", "loss", "epochs", "batch_size", "lr", "weight_decay",
              "image_size")


class TrainConfig(BaseModel):
    """What `tagllm train` does: train on a build's labels, test on a human-labeled split."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="The build to train on (a tagllm output folder).")
    test: str = Field(description="Human-labeled test split: image folder with metadata.jsonl, recipe, or output.")
    labels: Literal["machine", "reference"] = Field("machine", description="Train on machine or human labels.")
    backbone: str = Field(TINY, description="tinycnn or a timm model name.")
    pretrained: bool | str = Field(False, description="Local pretrained weights (True) or a weight file.")
    linear_probe: bool = Field(False, description="Freeze the backbone; train only the classifier.")
    loss: Literal["bce", "asl"] = Field("bce", description="Binary cross-entropy or asymmetric loss.")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0
    image_size: int | None = Field(None, ge=8, description="Input size (default 64 for tinycnn, 224 otherwise).")
    device: str | None = Field(None, description="auto (None), cpu, cuda or cuda:N.")
    workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    run_dir: Path | None = Field(None, description="Where train.json goes "
                                                   "(default OUT/train/<labels>-<backbone>-s<seed>).")
    checkpoint_dir: Path | None = Field(None, description="Checkpoints (default run_dir/checkpoints).")
    keep_checkpoints: int = Field(2, ge=1)
    resume: bool = Field(False, description="Continue an interrupted run from its latest checkpoint.")
    eval_each_epoch: bool = Field(False, description="Test mAP after every epoch (reported, never used to select).")
    progress: bool = True

    @property
    def size(self) -> int:
        return self.image_size or (64 if self.backbone == TINY else 224)

    @property
    def run(self) -> Path:
        name = f"{self.labels}-{self.backbone}-s{self.seed}"
        return Path(self.run_dir) if self.run_dir else Path(self.out) / "train" / name

    @property
    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else self.run / "checkpoints"

    def settings(self, device: str) -> dict[str, object]:
        """What train.json and every checkpoint record (a resumed run must match them)."""
        return {"labels": self.labels, "backbone": self.backbone, "pretrained": bool(self.pretrained),
                "linear_probe": self.linear_probe, "loss": self.loss, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay, "seed": self.seed,
                "image_size": self.size, "device": device,
                "mixed_precision": "bf16" if device.startswith("cuda") else None}
