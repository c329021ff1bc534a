"""Render the dataset card (README.md) from the recipe, stats, evaluation and cost on disk."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import DatasetCardData

from builder import __version__
from builder.method.base import TaggingContext
from builder.method.verify import verify_question
from builder.prompts.constraints import format_subset
from builder.publish import layout
from builder.publish.corrections import review_summary
from builder.publish.gallery import card_info
from builder.publish.stats import top_pairs
from builder.recipe.model import LoadedRecipe, load_recipe

TEMPLATE = "dataset_card.md.j2"
PROJECT_URL = "https://github.com/tagllm/tagllm"
HUB_URL = "https://huggingface.co"


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((name for limit, name in bounds if n < limit), "n>100M")


def card_header(loaded: LoadedRecipe, stats: dict[str, Any], simulated: bool) -> str:
    r = loaded.recipe
    formats = r.output.formats
    tags = ["tagllm", "multi-label", "image-tagging", *r.card.tags]
    if simulated:
        tags.append("simulated-labels")
    data = DatasetCardData(
        license=r.card.license,
        pretty_name=_title(loaded, simulated),
        task_categories=["image-classification"],
        task_ids=["multi-label-image-classification"],
        size_categories=[size_category(int(stats.get("ok", 0)))],
        # The simulated engine's labels are human labels plus noise, not model output: say 'other'.
        annotations_creators=["other"] if simulated else ["machine-generated"],
        source_datasets=r.card.source_datasets or ["original"],
        tags=list(dict.fromkeys(tags)),
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
        if "hf" in formats else None,
    )
    return data.to_yaml()


def _title(loaded: LoadedRecipe, simulated: bool) -> str:
    title = loaded.recipe.card.pretty_name or loaded.recipe.name
    return f"{title} (simulated labels)" if simulated else title


def _default_template() -> str:
    """cards/ at the repository root in a checkout; packaged as builder.cards in a wheel."""
    in_checkout = Path(__file__).resolve().parents[2] / "cards" / TEMPLATE
    if in_checkout.is_file():
        return in_checkout.read_text(encoding="utf-8")
    return resources.files("builder.cards").joinpath(TEMPLATE).read_text(encoding="utf-8")


def _template(path: Path | None) -> jinja2.Template:
    return _compiled(path.read_text(encoding="utf-8") if path else _default_template())


@lru_cache(maxsize=8)
def _compiled(text: str) -> jinja2.Template:
    """Compiled once per process (compiling costs more than rendering)."""
    env = jinja2.Environment(undefined=jinja2.ChainableUndefined, autoescape=False)
    return env.from_string(text)


def render_card(out: Path, template: Path | None = None, repo_id: str | None = None,
                loaded: LoadedRecipe | None = None, stats: dict[str, Any] | None = None) -> str:
    """The card; its load snippets name `repo_id` when given (pushed), else the card's own folder.

    A build hands in its recipe and the stats it just wrote; without them (push, relabel, eval) both
    are read from the folder."""
    out = layout.require_output(out)
    if loaded is None:
        loaded = load_recipe(out / layout.RECIPE)
    if stats is None:
        stats = layout.read_json(out / layout.STATS) if (out / layout.STATS).is_file() else {}
    manifest = layout.read_json(out / layout.MANIFEST)
    simulated = bool(manifest.get("simulated") or stats.get("simulated"))
    vocab = loaded.vocab
    ctx = TaggingContext(loaded)
    first_group = vocab.groups[0]
    group_names = [label.name for label in first_group.labels]
    evaluation = None
    report_path = out / "eval" / "report.json"
    if report_path.is_file():
        report = layout.read_json(report_path)
        evaluation = dict(report.get("overall", report))
        evaluation.setdefault("images", report.get("images"))
        evaluation.update({k: report.get(k) for k in ("conventions", "tuned_on", "binary_notice", "image_check")})
        evaluation["verified_note"] = (report.get("verified") or {}).get("note")  # partly verified human labels
    label_counts = stats.get("label_counts", {})
    ref_counts = stats.get("reference_counts", {})
    rows = [{"name": label.name, "group": vocab.group_of(label.name), "count": label_counts.get(label.name, 0),
             "reference": ref_counts.get(label.name, 0)} for label in vocab.labels]
    values = {
        "header": card_header(loaded, stats, simulated).strip(),
        "title": _title(loaded, simulated),
        "simulated": simulated,
        "description": loaded.recipe.card.description or loaded.recipe.description,
        "version": __version__,
        "stats": stats,
        "labels": vocab.names,
        "groups": vocab.groups,
        "vocab_name": vocab.name,
        "mean_labels": sum(stats.get("label_counts", {}).values()) / stats["ok"] if stats.get("ok") else 0.0,
        "formats": loaded.recipe.output.formats,
        "engine": manifest.get("engine", {}),
        "tagging": _published_tagging(loaded),
        "per_label_thresholds": len(loaded.thresholds),
        "concepts_digest": manifest.get("concepts_digest"),
        "concepts_digest_used": bool(loaded.recipe.tagging.concept_sheet),
        "example_group": first_group.name,
        "example_answer": format_subset(group_names[:2]),
        "stage1_example": ctx.stage1.render(group=first_group.name, options=group_names),
        "stage2_example": verify_question(ctx, vocab.names[0]),
        "label_rows": rows,
        "has_reference": bool(stats.get("with_reference")),
        "pairs": top_pairs(stats),
        "evaluation": evaluation,
        "pct": lambda v: f"{100 * v:.1f}" if isinstance(v, (int, float)) else "n/a",
        "cost": stats.get("cost", {}),
        "repo_id": repo_id,
        "load_path": repo_id or ".",
        "wds_pattern": (f"{HUB_URL}/datasets/{repo_id}/resolve/main/" if repo_id else "") + _wds_pattern(out),
        "wds_files": f"hf://datasets/{repo_id}/webdataset/*.tar" if repo_id else "webdataset/*.tar",
        "install": f"pip install 'tagllm{_extra(manifest)} @ git+{PROJECT_URL}'",
        "project_url": PROJECT_URL,
        "extra": loaded.recipe.card.extra,
        "calibration": _calibration(loaded),
        "thresholds_tuning": _thresholds_tuning(loaded),
        "review": review_summary(stats, out),
        "disk": disk_usage(out),
        "gallery": card_info(out),
    }
    return _template(template).render(**values)


def _published_tagging(loaded: LoadedRecipe) -> Any:
    """The tagging section as the folder's recipe.yaml has it: a concept sheet is saved as concepts.yaml."""
    tagging = loaded.recipe.tagging
    return tagging.model_copy(update={"concept_sheet": layout.CONCEPTS}) if tagging.concept_sheet else tagging


def _calibration(loaded: LoadedRecipe) -> dict[str, Any] | None:
    """What a calibrated concept sheet says about itself: split, held-out figures, simulated or not."""
    prov = loaded.concepts.provenance or {}
    if "dev_metrics" not in prov:
        return None
    held = prov.get("held_out_metrics") or {}
    return {"notice": prov.get("notice"), "dev": (prov.get("dev_metrics") or {}).get("images"),
            "held_out": held.get("images"), "before": (held.get("before") or {}).get("CF1"),
            "after": (held.get("after_tuned") or held.get("after") or {}).get("CF1"), "tool": prov.get("tool")}


def _thresholds_tuning(loaded: LoadedRecipe) -> dict[str, Any] | None:
    """The `tuned_on` block of the thresholds file in use (written by `tagllm eval --tune`)."""
    import yaml

    path = loaded.path(loaded.recipe.tagging.thresholds_file)
    if path is None or not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    block = data.get("tuned_on") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        return None
    return {"images": block.get("images"), "held_out": block.get("held_out") or {},
            "simulated": block.get("simulated")}


def _extra(manifest: dict[str, Any]) -> str:
    engine = (manifest.get("engine") or {}).get("engine")
    return {"sglang": "[sglang]", "transformers": "[hf]"}.get(engine, "")


def disk_usage(out: Path) -> str:
    """Measured size of each stored format: each keeps the original image bytes, so storing both repeats them."""
    folders = (("webdataset", "webdataset"), ("hf parquet", layout.HF_DIR))
    sizes = {name: sum(f.stat().st_size for f in (out / folder).rglob("*") if f.is_file())
             for name, folder in folders if (out / folder).is_dir()}
    if not sizes:
        return "n/a"
    text = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sizes.items())
    if len(sizes) == 2:
        smaller = min(sizes.values()) or 1
        text += f" (storing both: {sum(sizes.values()) / smaller:.2f}x the smaller one alone)"
    return text


def _wds_pattern(out: Path) -> str:
    shards = layout.completed_shards(out)
    if not shards:
        return "webdataset/shard-00000.tar"
    last = layout.shard_name(shards[-1]).split("-")[1]
    return f"webdataset/shard-{{00000..{last}}}.tar" if len(shards) > 1 else "webdataset/shard-00000.tar"


def write_card(out: Path, template: Path | None = None, repo_id: str | None = None,
               loaded: LoadedRecipe | None = None, stats: dict[str, Any] | None = None) -> Path:
    path = Path(out) / layout.CARD
    path.write_text(render_card(Path(out), template, repo_id, loaded, stats), encoding="utf-8")
    return path
