"""The paper's experiment in one call: MLLM labels on a train split, then the downstream comparison.

Steps, each resumable (a rerun keeps finished shards, cached answers and nothing else):
1. build the train split with the `tagllm` strategy and with a plain-MLLM baseline (`all-in-one` or
   `yes-no`), same engine and model;
2. label quality of both against the split's human labels (CP/CR/CF1/OP/OR/OF1/mAP);
3. train the same classifier three times with the same settings (MLLM labels, human labels, baseline
   labels) and test each on the val split's human labels;
4. mAP ratio (MLLM / human), gap closed over the baseline, and the cost per image of the builds.
`render_table` prints it the way the paper reports it; simulated runs say SIMULATED on top.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from builder.errors import UserError
from builder.recipe.model import load_recipe
from builder.workflows.reproduce_table import render_table


@dataclass(frozen=True)
class Benchmark:
    """A train/test recipe pair and where their files sit under a dataset root (official layout)."""

    train_recipe: str
    test_recipe: str
    train_files: dict[str, str]
    test_files: dict[str, str]


BENCHMARKS = {
    "coco": Benchmark("coco2014-train.yaml", "coco2014.yaml",
                      {"path": "train2014", "annotations": "annotations/instances_train2014.json"},
                      {"path": "val2014", "annotations": "annotations/instances_val2014.json"}),
    "objects365": Benchmark("objects365-train.yaml", "objects365.yaml",
                            {"path": "train", "annotations": "annotations/zhiyuan_objv2_train.json"},
                            {"path": "val", "annotations": "annotations/zhiyuan_objv2_val.json"}),
}


class ReproduceConfig(BaseModel):
    """Everything the experiment needs; the classifier settings are shared by the three trainings."""

    model_config = ConfigDict(extra="forbid")

    dataset: Literal["coco", "objects365"] = "coco"
    recipes: Path = Path("recipes")
    data: Path | None = Field(None, description="Dataset root in the official layout (None: the recipes' paths).")
    out: Path | None = Field(None, description="Default out/reproduce-<dataset>.")
    engine: str | None = None
    model: str | None = None
    baseline: Literal["all-in-one", "yes-no"] = "all-in-one"
    limit: int | None = Field(None, ge=1, description="Train images to label (None: the whole split).")
    test_limit: int | None = Field(None, ge=1)
    sets: list[str] = Field(default_factory=list, description="More recipe overrides for both builds.")
    backbone: str = "resnet50"
    pretrained: bool | str = True
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    image_size: int | None = Field(None, ge=16)
    seed: int = 0
    device: str | None = None
    workers: int = Field(4, ge=0)
    progress: bool = True

    def output(self) -> Path:
        return Path(self.out) if self.out else Path("out") / f"reproduce-{self.dataset}"


def make_config(**values: Any) -> ReproduceConfig:
    """Validate the options; a bad one becomes one line naming it."""
    from pydantic import ValidationError

    from builder.recipe.vocab import format_validation_error

    try:
        return ReproduceConfig(**values)
    except ValidationError as exc:
        raise UserError(format_validation_error("reproduce", exc)) from exc


def _benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UserError(f"reproduce: unknown dataset {name!r} (choose {', '.join(BENCHMARKS)})")
    return BENCHMARKS[name]


def _file_overrides(cfg: ReproduceConfig, files: dict[str, str]) -> list[str]:
    if cfg.data is None:
        return []
    root = Path(cfg.data).expanduser().resolve()
    return [f"source.{key}={root / rel}" for key, rel in files.items()]


def _train_overrides(cfg: ReproduceConfig, bench: Benchmark, strategy: str, out: Path) -> list[str]:
    sets = _file_overrides(cfg, bench.train_files) + [f"tagging.strategy={strategy}", f"output.dir={out}"]
    sets += [f"engine.kind={cfg.engine}"] if cfg.engine else []
    sets += [f"engine.model={cfg.model}"] if cfg.model else []
    sets += [f"source.limit={cfg.limit}"] if cfg.limit else []
    return sets + list(cfg.sets)


def build_split(cfg: ReproduceConfig, strategy: str, out: Path) -> dict[str, Any]:
    """Label the train split with `strategy`; an earlier complete or partial build is resumed."""
    from builder.run.build import Builder

    bench = _benchmark(cfg.dataset)
    loaded = load_recipe(Path(cfg.recipes) / bench.train_recipe, _train_overrides(cfg, bench, strategy, out))
    result = Builder(loaded, out, progress=cfg.progress).run()
    return {"out": str(out), "simulated": result.simulated, "engine": result.engine, "stats": result.stats}


def write_test_recipe(cfg: ReproduceConfig, path: Path) -> Path:
    """The val split as a self-contained recipe (inline vocabulary, absolute paths): the test set."""
    bench = _benchmark(cfg.dataset)
    sets = _file_overrides(cfg, bench.test_files)
    sets += [f"source.limit={cfg.test_limit}"] if cfg.test_limit else []
    loaded = load_recipe(Path(cfg.recipes) / bench.test_recipe, sets)
    data = loaded.resolved()
    data["tagging"]["concept_sheet"] = None  # the test recipe is only read for its images and human labels
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def train_arm(cfg: ReproduceConfig, dataset: Path, test: Path, labels: str, run_dir: Path) -> dict[str, Any]:
    """One classifier training through the public `train` function (same settings for every arm)."""
    from builder.analysis.train import TrainConfig, train

    return train(TrainConfig(out=dataset, test=str(test), labels=labels, backbone=cfg.backbone,
                             pretrained=cfg.pretrained, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                             seed=cfg.seed, image_size=cfg.image_size, device=cfg.device, workers=cfg.workers,
                             run_dir=run_dir, resume=True, progress=cfg.progress))


def label_quality(out: Path) -> dict[str, Any]:
    from builder.analysis.evaluate import evaluate

    result = evaluate(out)
    return {**result["overall"], "images": result["images"], "simulated": result["simulated"]}


def reproduce(cfg: ReproduceConfig) -> dict[str, Any]:
    """Run the whole experiment; writes OUT/reproduce.json and OUT/reproduce.md, returns the result."""
    from builder.analysis.train import compare_training

    root = cfg.output()
    arms = {"tagllm": root / "tagllm", "baseline": root / cfg.baseline}
    builds = {name: build_split(cfg, "tagllm" if name == "tagllm" else cfg.baseline, out)
              for name, out in arms.items()}
    quality = {name: label_quality(out) for name, out in arms.items()}
    test = write_test_recipe(cfg, root / "test-recipe.yaml")
    runs = {"human": train_arm(cfg, arms["tagllm"], test, "reference", root / "train" / "human"),
            "tagllm": train_arm(cfg, arms["tagllm"], test, "machine", root / "train" / "tagllm"),
            "baseline": train_arm(cfg, arms["baseline"], test, "machine", root / "train" / "baseline")}
    comparison = compare_training(runs["tagllm"]["run_dir"], runs["human"]["run_dir"], runs["baseline"]["run_dir"])
    result = {
        "dataset": cfg.dataset,
        "simulated": any(b["simulated"] for b in builds.values()),
        "config": cfg.model_dump(mode="json"),
        "engine": builds["tagllm"]["engine"],
        "baseline": cfg.baseline,
        "label_quality": quality,
        "downstream": {name: {"mAP": r["mAP"], "train_images": r["train_images"], "test_images": r["test_images"]}
                       for name, r in runs.items()},
        "mAP_ratio": comparison.get("mAP_ratio"),
        "gap_closed": comparison.get("gap_closed"),
        "gap_closed_note": comparison.get("gap_closed_note"),
        "cost": {name: b["stats"].get("cost", {}) for name, b in builds.items()},
        "classifier": {k: runs["tagllm"]["settings"].get(k) for k in
                       ("backbone", "pretrained", "epochs", "batch_size", "lr", "image_size", "loss", "seed")},
    }
    result["table"] = render_table(result)
    (root / "reproduce.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (root / "reproduce.md").write_text(result["table"], encoding="utf-8")
    return result
