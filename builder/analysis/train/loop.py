"""Train on a build's labels, test the last epoch's model on human labels, write train.json.

The question the TagLLM paper answers: does a classifier trained on machine labels get close to
one trained on human labels? Train the same model twice on the same images (`labels="machine"`,
then `labels="reference"`), test both on the same human-labeled split, and compare with
`compare_training`. Before training starts the test split is checked: images that do not decode
are left out and listed, and test images that are also training images are warned about.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from builder.analysis.metrics import average_precisions, label_metrics, rounded
from builder.analysis.samples import Sample, output_samples, output_vocabulary, split_samples
from builder.analysis.train.config import TrainConfig
from builder.analysis.train.data import LabeledImages, leakage, readable
from builder.analysis.train.model import AsymmetricLoss, build_model, classifier
from builder.errors import UserError
from builder.publish import layout


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: no CUDA device visible")
    return torch.device(name)


@torch.no_grad()
def predict(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device
            ) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and targets over a loader."""
    model.eval()
    scores, targets = [], []
    for x, y in loader:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x.to(device, non_blocking=True))
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        targets.append(y.numpy())
    return np.concatenate(scores), np.concatenate(targets).astype(bool)


def train_epoch(model: nn.Module, batches: Any, criterion: nn.Module, optimizer: Any, scheduler: Any,
                device: torch.device, linear_probe: bool) -> float:
    """One pass over the training data (bf16 autocast on CUDA); returns the mean loss per image."""
    model.train()
    if linear_probe:
        model.eval()  # frozen features: batch-norm statistics stay as loaded
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        batch_loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(batch_loss.detach()) * len(x)
        count += len(x)
    return total / max(count, 1)


@dataclass
class Prepared:
    """The data of one run, checked before any training."""

    names: list[str]
    recipe: dict[str, Any]
    train_set: list[Sample]
    test_set: list[Sample]
    skipped: dict[str, int]
    simulated: bool
    checks: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def prepare(cfg: TrainConfig) -> Prepared:
    """Training samples, test samples that decode, and the overlap between the two."""
    out = layout.require_output(Path(cfg.out))
    vocab, recipe = output_vocabulary(out)
    train_set, skipped = output_samples(out, vocab, cfg.labels)
    index = [(r.status, r.simulated) for r in layout.iter_records(out)]
    skipped["failed"] = sum(status != "ok" for status, _ in index)  # shards hold no failed records
    if not train_set:
        raise UserError(f"{out}: no usable training images ({skipped})")
    test_set, unreadable = readable(split_samples(cfg.test, vocab), cfg.size)
    if not test_set:
        raise UserError(f"{cfg.test}: no test image decodes (e.g. {unreadable[0]['key']}: {unreadable[0]['reason']})")
    overlap, train_digest, test_digest = leakage(train_set, test_set)
    prep = Prepared(vocab.names, recipe, train_set, test_set, skipped, any(sim for _, sim in index),
                    {"test_unreadable": unreadable, "overlap": overlap, "train_digest": train_digest,
                     "test_digest": test_digest})
    if unreadable:
        prep.warnings.append(f"{len(unreadable)} test images do not decode and are left out: "
                             + ", ".join(u["key"] for u in unreadable[:5]))
    if overlap["same_images"]:
        prep.warnings.append(f"{overlap['same_images']} of the {len(test_set)} test images are also training "
                             "images: the test mAP is partly in-sample")
    return prep


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train on a build's `labels`, test on human labels; write train.json and return what it holds.

    Checkpoints go to `cfg.checkpoints`, one per epoch (the last `keep_checkpoints` kept);
    `resume` continues an interrupted run from the latest one (same settings; the result equals
    an uninterrupted run on CPU). The model of the last epoch is tested: no model selection on the
    test split.
    """
    prep = prepare(cfg)
    for line in prep.warnings:
        print(f"warning: {line}", file=sys.stderr)
    dev = _device(cfg.device)
    seed_everything(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    pin = dev.type == "cuda"
    train_loader = torch.utils.data.DataLoader(
        LabeledImages(prep.train_set, prep.names, cfg.size, augment=True), batch_size=cfg.batch_size, shuffle=True,
        num_workers=cfg.workers, generator=g, drop_last=len(prep.train_set) > cfg.batch_size, pin_memory=pin)
    test_loader = torch.utils.data.DataLoader(LabeledImages(prep.test_set, prep.names, cfg.size),
                                              batch_size=cfg.batch_size * 2, num_workers=cfg.workers, pin_memory=pin)
    model = build_model(cfg.backbone, len(prep.names), cfg.pretrained).to(dev)
    if cfg.linear_probe:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in classifier(model).parameters():
            p.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr,
                                                    total_steps=max(cfg.epochs * len(train_loader), 1), pct_start=0.2)
    state = Loop(model, optimizer, scheduler, g, cfg.settings(str(dev)))
    started = time.perf_counter()
    state.run(cfg, train_loader, test_loader, dev, prep.names)
    scores, targets = predict(model, test_loader, dev)
    result = _result(cfg, prep, scores, targets, state)
    result["seconds"] = round(time.perf_counter() - started, 2)
    cfg.run.mkdir(parents=True, exist_ok=True)
    (cfg.run / "train.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    result["run_dir"] = str(cfg.run)
    return result


@dataclass
class Loop:
    """The model, optimizer and schedule of a run, with its checkpoints."""

    model: nn.Module
    optimizer: Any
    scheduler: Any
    loader_rng: torch.Generator
    settings: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    def run(self, cfg: TrainConfig, train_loader: Any, test_loader: Any, dev: torch.device, names: list[str]) -> None:
        start = self.resume(cfg.checkpoints, dev) if cfg.resume else 0
        criterion: nn.Module = AsymmetricLoss() if cfg.loss == "asl" else nn.BCEWithLogitsLoss()
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            batches = _progress(train_loader, cfg.progress, f"epoch {epoch + 1}/{cfg.epochs}")
            mean_loss = train_epoch(self.model, batches, criterion, self.optimizer, self.scheduler, dev,
                                    cfg.linear_probe)
            row: dict[str, Any] = {"epoch": epoch + 1, "loss": round(mean_loss, 5),
                                   "seconds": round(time.perf_counter() - t0, 2)}
            if cfg.eval_each_epoch:
                s, t = predict(self.model, test_loader, dev)
                row["test_mAP"] = rounded(np.nanmean(average_precisions(t, s)))
            self.history.append(row)
            self.save(cfg.checkpoints, epoch + 1, names, cfg.keep_checkpoints)
            if cfg.progress:
                print(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k} {v}" for k, v in row.items()
                                                                     if k != "epoch"), file=sys.stderr)

    def resume(self, folder: Path, dev: torch.device) -> int:
        """Load the latest checkpoint (same settings only); returns the epoch to continue from."""
        last = latest_checkpoint(folder)
        if last is None:
            return 0
        state = torch.load(last, map_location=dev, weights_only=False)
        changed = [k for k, v in self.settings.items() if k != "device" and state["settings"].get(k) != v]
        if changed:
            raise UserError(f"{last}: cannot resume with other settings ({', '.join(changed)} changed)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.loader_rng.set_state(state["loader_rng"])
        self.history = state["history"]
        return int(state["epoch"])

    def save(self, folder: Path, epoch: int, names: list[str], keep: int) -> None:
        """Everything a resumed run needs to continue exactly where this epoch ended."""
        folder.mkdir(parents=True, exist_ok=True)
        state = {"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(),
                 "loader_rng": self.loader_rng.get_state(), "history": self.history, "settings": self.settings,
                 "labels": names}
        path = folder / f"epoch-{epoch:03d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        for old in sorted(folder.glob("epoch-*.pt"))[:-max(keep, 1)]:
            old.unlink()


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(Path(folder).glob("epoch-*.pt"))
    return found[-1] if found else None


def _result(cfg: TrainConfig, prep: Prepared, scores: np.ndarray, targets: np.ndarray, loop: Loop) -> dict[str, Any]:
    names = prep.names
    ap = average_precisions(targets, scores)
    m = label_metrics(targets, scores >= 0.5)
    has_pos = targets.any(0)
    result = {
        "mAP": rounded(np.nanmean(ap)) if has_pos.any() else None,
        "per_class_ap": {n: rounded(ap[c]) for c, n in enumerate(names)},
        "test_OF1": rounded(m["OF1"]), "test_CF1": rounded(m["CF1"]),
        "classes_without_test_positives": [n for c, n in enumerate(names) if not has_pos[c]],
        "labels": cfg.labels,
        "simulated": prep.simulated and cfg.labels == "machine",
        "dataset": str(Path(cfg.out).resolve()),
        "dataset_name": prep.recipe.get("name"),
        "test": str(Path(cfg.test).resolve()),
        "vocabulary": names,
        "train_images": len(prep.train_set),
        "train_skipped": prep.skipped,
        "test_images": len(prep.test_set),
        "train_digest": prep.checks["train_digest"],
        "test_digest": prep.checks["test_digest"],
        "test_unreadable": prep.checks["test_unreadable"],
        "train_test_overlap": prep.checks["overlap"],
        "warnings": prep.warnings,
        "settings": loop.settings,
        "history": loop.history,
        "checkpoint": str(latest_checkpoint(cfg.checkpoints)),
        "versions": {"torch": torch.__version__},
    }
    if result["simulated"]:
        result["notice"] = "trained on labels from the simulated engine — not a measure of model quality"
    return result


def _progress(loader: Any, enabled: bool, desc: str) -> Any:
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False, file=sys.stderr)
