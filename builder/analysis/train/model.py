"""Classifiers for the downstream check: a tiny CNN for CPUs or any timm model, and the asymmetric loss."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from builder.analysis.train.config import TINY
from builder.errors import UserError


class TinyCNN(nn.Module):
    """Four conv blocks and global max pooling: a few hundred thousand parameters, fast on CPU."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                       nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        w = width
        self.features = nn.Sequential(*block(3, w, True), *block(w, 2 * w, True), *block(2 * w, 4 * w, True),
                                      *block(4 * w, 4 * w, False), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class AsymmetricLoss(nn.Module):
    """Asymmetric loss for multi-label classification (Ridnik et al., ICCV 2021).

    With p = sigmoid(logit) and the shifted probability p_m = max(p - m, 0):
        L = -Σ [ y · (1 - p)^γ+ · log(p)  +  (1 - y) · p_m^γ- · log(1 - p_m) ]
    γ- > γ+ down-weights the many easy negatives; the margin m discards very easy negatives and
    mislabeled ones. Defaults follow the paper: γ+ = 0, γ- = 4, m = 0.05. Averaged over the batch.
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        self.gamma_pos, self.gamma_neg, self.clip, self.eps = gamma_pos, gamma_neg, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits.float())
        p_m = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        pos = targets * (1 - p).pow(self.gamma_pos) * torch.log(p.clamp(min=self.eps))
        neg = (1 - targets) * p_m.pow(self.gamma_neg) * torch.log((1 - p_m).clamp(min=self.eps))
        return -(pos + neg).sum() / logits.shape[0]


def _local_weights(name: str) -> str | None:
    """A locally cached pretrained weight file for a timm model, or None (never downloads)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.file and Path(cfg.file).is_file():
        return cfg.file
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return found
    if cfg.url:
        p = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
        if p.is_file():
            return str(p)
    return None


def build_model(backbone: str, num_classes: int, pretrained: bool | str = False) -> nn.Module:
    """The built-in tiny CNN, or any timm model; `pretrained` = True (local cache) or a weight file."""
    if backbone == TINY:
        if pretrained:
            raise UserError(f"{TINY} has no pretrained weights; drop --pretrained")
        return TinyCNN(num_classes)
    try:
        import timm
    except ImportError as exc:
        raise UserError(f"backbone {backbone!r} needs timm: pip install -e '.[train]' in a checkout") from exc
    if not timm.is_model(backbone):
        raise UserError(f"unknown backbone {backbone!r}: use {TINY} or a timm model name (timm.list_models())")
    if not pretrained:
        return timm.create_model(backbone, pretrained=False, num_classes=num_classes)
    weights = pretrained if isinstance(pretrained, str) else _local_weights(backbone)
    if weights is None or not Path(weights).is_file():
        raise UserError(f"no local pretrained weights for {backbone!r} (nothing is downloaded here): "
                        "put them in the Hugging Face cache, pass a weight file, or train from scratch")
    return timm.create_model(backbone, pretrained=True, num_classes=num_classes,
                             pretrained_cfg_overlay={"file": str(weights)})


def classifier(model: nn.Module) -> nn.Module:
    return model.head if isinstance(model, TinyCNN) else model.get_classifier()
