"""Downstream check: train a multi-label classifier on a built dataset, test it on human labels.

The question the TagLLM paper answers: does a classifier trained on machine labels get close to
one trained on human labels? Train the same model twice on the same images (`labels="machine"`,
then `labels="reference"`), test both on the same human-labeled split, and compare with
`compare_training` (mAP ratio; with a plain-MLLM baseline run, the gap closed).

Training reads the WebDataset shards of a build (the HF parquet when no shards were written),
only records with status "ok". The test split is an image folder with `metadata.jsonl`, a recipe
YAML, or another tagllm output (its human `reference` labels). Needs the `train` extra.
"""

from __future__ import annotations

import io
import json
import math
import random
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from builder.analysis.evaluate import average_precisions, label_metrics, output_vocabulary, source_items
from builder.errors import UserError
from builder.publish import layout
from builder.recipe.vocab import Vocabulary
from builder.records import Record

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY = "tinycnn"


# --- data --------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """Where one image's bytes are (a tar member, a file, or in memory) and its label names."""

    key: str
    labels: list[str]
    tar: str | None = None
    offset: int = 0
    size: int = 0
    file: str | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.file is not None:
            return Path(self.file).read_bytes()
        with open(self.tar, "rb") as f:  # type: ignore[arg-type]
            f.seek(self.offset)
            return f.read(self.size)


def _tar_records(path: Path) -> Iterator[tuple[Record, tarfile.TarInfo | None]]:
    """Each record of a WebDataset shard with the tar member holding its image (read lazily later)."""
    with tarfile.open(path) as tar:
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        for m in tar:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")
            members.setdefault(key, {})[ext] = m
        for parts in members.values():
            if "json" not in parts:
                continue
            record = Record.from_json(json.loads(tar.extractfile(parts["json"]).read()))  # type: ignore[union-attr]
            yield record, parts.get(record.ext or "bin")


def output_samples(out: Path, vocab: Vocabulary, labels: str) -> tuple[list[Sample], dict[str, int]]:
    """Samples of a build with `labels` ("machine" or "reference") as targets, and what was skipped.

    Only records with status "ok" and an image count; with `labels="reference"`, also only records
    that carry human labels.
    """
    out = layout.require_output(out)
    skipped = {"failed": 0, "no_image": 0, "no_reference": 0}
    samples: list[Sample] = []
    tars = [layout.tar_path(out, s) for s in layout.completed_shards(out) if layout.tar_path(out, s).is_file()]
    rows: Iterator[tuple[Record, Sample | None]]
    if tars:
        rows = ((r, Sample(r.key, [], tar=str(t), offset=m.offset_data, size=m.size) if m else None)
                for t in tars for r, m in _tar_records(t))
    else:
        rows = _hf_rows(out, vocab)
    for record, sample in rows:
        if record.status != "ok":
            skipped["failed"] += 1
        elif sample is None:
            skipped["no_image"] += 1
        elif labels == "reference" and record.reference is None:
            skipped["no_reference"] += 1
        else:
            sample.labels = list(record.labels if labels == "machine" else record.reference or [])
            samples.append(sample)
    return samples, skipped


def _hf_rows(out: Path, vocab: Vocabulary) -> Iterator[tuple[Record, Sample | None]]:
    """Records from the HF parquet files (images held in memory: used when no shards exist)."""
    import pyarrow.parquet as pq

    files = sorted((out / layout.HF_DIR).glob("train-*.parquet"))
    if not files:
        raise UserError(f"{out}: no WebDataset shards and no HF parquet files to train on")
    names = vocab.names
    for f in files:
        for row in pq.read_table(f, columns=["key", "image", "labels", "reference", "status"]).to_pylist():
            as_names = [names[i] for i in row["labels"] or []]
            ref = [names[i] for i in row["reference"]] if row["reference"] is not None else None
            record = Record(key=row["key"], status=row["status"], labels=as_names, reference=ref)
            image = (row["image"] or {}).get("bytes")
            yield record, Sample(row["key"], [], data=image) if image else None


def split_samples(source: str | Path, vocab: Vocabulary) -> list[Sample]:
    """A human-labeled test split: another tagllm output (its reference labels), a recipe, or a folder."""
    path = Path(source)
    if (path / layout.MANIFEST).is_file():
        test_vocab, _ = output_vocabulary(path)
        if test_vocab.names != vocab.names:
            raise UserError(f"{source}: its vocabulary differs from the training dataset's")
        samples, _ = output_samples(path, vocab, "reference")
    else:
        samples = []
        for item in source_items(path, vocab):
            if item.error or item.reference is None:
                continue
            where = item.ref.get("path")
            file = (path / where) if path.is_dir() and where else None
            if file is not None and file.is_file():
                samples.append(Sample(item.key, item.reference, file=str(file)))
            else:
                samples.append(Sample(item.key, item.reference, data=item.image))
    if not samples:
        raise UserError(f"{source}: no human-labeled images to test on")
    return samples


def decode(data: bytes, size: int) -> torch.Tensor:
    """Encoded image -> normalized float tensor (3, size, size)."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


class LabeledImages(torch.utils.data.Dataset):
    """Map-style dataset over samples: decoded, resized image and a multi-hot target."""

    def __init__(self, samples: list[Sample], names: list[str], size: int, augment: bool = False):
        self.samples = samples
        self.col = {n: i for i, n in enumerate(names)}
        self.size = size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.samples[i]
        x = decode(s.read(), self.size)
        if self.augment and torch.rand(()) < 0.5:
            x = x.flip(-1)
        y = torch.zeros(len(self.col))
        y[[self.col[n] for n in s.labels if n in self.col]] = 1.0
        return x, y


# --- model and loss ----------------------------------------------------------------------------------

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
        raise UserError(f"backbone {backbone!r} needs timm: pip install 'tagllm[train]'") from exc
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


def _classifier(model: nn.Module) -> nn.Module:
    return model.head if isinstance(model, TinyCNN) else model.get_classifier()


# --- training ----------------------------------------------------------------------------------------

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


def _latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("epoch-*.pt"))
    return found[-1] if found else None


def train(out_dir: str | Path, test: str | Path, labels: str = "machine", backbone: str = TINY,
          pretrained: bool | str = False, linear_probe: bool = False, loss: str = "bce", epochs: int = 10,
          batch_size: int = 64, lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0,
          image_size: int | None = None, device: str | None = None, workers: int = 0,
          run_dir: str | Path | None = None, checkpoint_dir: str | Path | None = None,
          keep_checkpoints: int = 2, resume: bool = False, eval_each_epoch: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Train on a build's `labels` ("machine" or "reference"), test on human labels; write train.json.

    `run_dir` (default OUT/train/<labels>-<backbone>-s<seed>) gets train.json; checkpoints go to
    `checkpoint_dir` (default run_dir/checkpoints), one per epoch (the last `keep_checkpoints`
    kept); `resume` continues an interrupted run from the latest one (same settings; the result
    equals an uninterrupted run on CPU). The model of the last epoch is tested: no model
    selection on the test split. Returns what train.json holds.
    """
    if labels not in ("machine", "reference"):
        raise UserError(f"labels {labels!r}: choose machine or reference")
    if loss not in ("bce", "asl"):
        raise UserError(f"loss {loss!r}: choose bce or asl")
    out = layout.require_output(Path(out_dir))
    vocab, recipe = output_vocabulary(out)
    names = vocab.names
    size = image_size or (64 if backbone == TINY else 224)
    run = Path(run_dir) if run_dir else out / "train" / f"{labels}-{backbone}-s{seed}"
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else run / "checkpoints"
    dev = _device(device)
    seed_everything(seed)

    train_set, skipped = output_samples(out, vocab, labels)
    index = [(r.status, r.simulated) for r in layout.iter_records(out)]
    skipped["failed"] = sum(status != "ok" for status, _ in index)  # shards hold no failed records
    if not train_set:
        raise UserError(f"{out}: no usable training images ({skipped})")
    test_set = split_samples(test, vocab)
    simulated = any(sim for _, sim in index)
    g = torch.Generator().manual_seed(seed)
    pin = dev.type == "cuda"
    train_loader = torch.utils.data.DataLoader(
        LabeledImages(train_set, names, size, augment=True), batch_size=batch_size, shuffle=True,
        num_workers=workers, generator=g, drop_last=len(train_set) > batch_size, pin_memory=pin)
    test_loader = torch.utils.data.DataLoader(LabeledImages(test_set, names, size), batch_size=batch_size * 2,
                                              num_workers=workers, pin_memory=pin)

    model = build_model(backbone, len(names), pretrained).to(dev)
    if linear_probe:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in _classifier(model).parameters():
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.2)
    criterion: nn.Module = AsymmetricLoss() if loss == "asl" else nn.BCEWithLogitsLoss()

    settings = {"labels": labels, "backbone": backbone, "pretrained": bool(pretrained),
                "linear_probe": linear_probe, "loss": loss, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "weight_decay": weight_decay, "seed": seed, "image_size": size,
                "device": str(dev), "mixed_precision": "bf16" if dev.type == "cuda" else None}
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and (last := _latest_checkpoint(ckpt_dir)) is not None:
        state = torch.load(last, map_location=dev, weights_only=False)
        changed = [k for k, v in settings.items() if k != "device" and state["settings"].get(k) != v]
        if changed:
            raise UserError(f"{last}: cannot resume with other settings ({', '.join(changed)} changed)")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        g.set_state(state["loader_rng"])
        start_epoch, history = state["epoch"], state["history"]
    started = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        batches = _progress(train_loader, progress, f"epoch {epoch + 1}/{epochs}")
        mean_loss = train_epoch(model, batches, criterion, optimizer, scheduler, dev, linear_probe)
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": round(mean_loss, 5),
                               "seconds": round(time.perf_counter() - t0, 2)}
        if eval_each_epoch:
            s, t = predict(model, test_loader, dev)
            row["test_mAP"] = _round(np.nanmean(average_precisions(t, s)))
        history.append(row)
        _save_checkpoint(ckpt_dir, epoch + 1, model, optimizer, scheduler, g, history, settings, names,
                         keep_checkpoints)
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "epoch"),
                  file=sys.stderr)

    scores, targets = predict(model, test_loader, dev)
    ap = average_precisions(targets, scores)
    m = label_metrics(targets, scores >= 0.5)
    has_pos = targets.any(0)
    result = {
        "mAP": _round(np.nanmean(ap)) if has_pos.any() else None,
        "per_class_ap": {n: (None if np.isnan(ap[c]) else _round(ap[c])) for c, n in enumerate(names)},
        "test_OF1": _round(m["OF1"]), "test_CF1": _round(m["CF1"]),
        "classes_without_test_positives": [n for c, n in enumerate(names) if not has_pos[c]],
        "labels": labels,
        "simulated": simulated and labels == "machine",
        "dataset": str(out.resolve()),
        "dataset_name": recipe.get("name"),
        "test": str(Path(test).resolve()),
        "vocabulary": names,
        "train_images": len(train_set),
        "train_skipped": skipped,
        "test_images": len(test_set),
        "settings": settings,
        "history": history,
        "seconds": round(time.perf_counter() - started, 2),
        "checkpoint": str(_latest_checkpoint(ckpt_dir)),
        "versions": {"torch": torch.__version__},
    }
    if result["simulated"]:
        result["notice"] = "trained on labels from the simulated engine — not a measure of model quality"
    run.mkdir(parents=True, exist_ok=True)
    (run / "train.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    result["run_dir"] = str(run)
    return result


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


def _progress(loader: Any, enabled: bool, desc: str) -> Any:
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False, file=sys.stderr)


def _save_checkpoint(folder: Path, epoch: int, model: nn.Module, optimizer: Any, scheduler: Any,
                     loader_rng: torch.Generator, history: list, settings: dict, names: list[str], keep: int) -> None:
    """Everything a resumed run needs to continue exactly where this epoch ended."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
             "loader_rng": loader_rng.get_state(), "history": history, "settings": settings, "labels": names}
    path = folder / f"epoch-{epoch:03d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    for old in sorted(folder.glob("epoch-*.pt"))[:-max(keep, 1)]:
        old.unlink()


# --- comparing runs ----------------------------------------------------------------------------------

def _load_runs(runs: str | Path | list[str | Path]) -> list[dict[str, Any]]:
    items = runs if isinstance(runs, list) else [runs]
    out = []
    for r in items:
        p = Path(r)
        p = p / "train.json" if p.is_dir() else p
        if not p.is_file():
            raise UserError(f"{r}: no train.json (run `tagllm train` first)")
        out.append(json.loads(p.read_text(encoding="utf-8")))
    return out


def _arm(runs: list[dict[str, Any]]) -> dict[str, Any]:
    values = [r["mAP"] for r in runs]
    if any(v is None for v in values):
        raise UserError("a run has no test mAP (no class with positives in its test split)")
    return {"mAP": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4), "runs": len(values),
            "values": values, "labels": sorted({r["labels"] for r in runs}),
            "simulated": any(r.get("simulated") for r in runs)}


def compare_training(machine_run: str | Path | list[str | Path], human_run: str | Path | list[str | Path],
                     baseline_run: str | Path | list[str | Path] | None = None) -> dict[str, Any]:
    """mAP ratio machine/human and, with a baseline, gap closed = (m - b) / (h - b) (DESIGN.md).

    Each argument is a run folder or train.json, or a list of them (seeds): means are compared.
    The runs must share the test split and the vocabulary.
    """
    arms = {"machine": _load_runs(machine_run), "human": _load_runs(human_run)}
    if baseline_run is not None:
        arms["baseline"] = _load_runs(baseline_run)
    all_runs = [r for runs in arms.values() for r in runs]
    if len({r["test"] for r in all_runs}) > 1:
        raise UserError("the runs were tested on different splits: " + ", ".join(sorted({r["test"] for r in all_runs})))
    if len({tuple(r["vocabulary"]) for r in all_runs}) > 1:
        raise UserError("the runs use different vocabularies")
    summary = {name: _arm(runs) for name, runs in arms.items()}
    m, h = summary["machine"]["mAP"], summary["human"]["mAP"]
    result: dict[str, Any] = {**summary, "test": all_runs[0]["test"],
                              "mAP_ratio": round(m / h, 4) if h else None}
    if "baseline" in summary:
        b = summary["baseline"]["mAP"]
        result["gap_closed"] = round((m - b) / (h - b), 4) if h != b else None
    if any(s["simulated"] for s in summary.values()):
        result["notice"] = ("machine labels from the simulated engine — this compares label noise levels, "
                            "not a model's quality")
    return result
