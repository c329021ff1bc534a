"""Label Studio round trip: export the images worth a person's time, read the reviewed labels back.

Export writes, in one folder: `tasks.json` (Label Studio's JSON import format: one task per image
with the image as a local-files path or URL, and the machine labels as a prediction of Choices
over the vocabulary, scored), `config.xml` (the matching labeling config), and `images/` (the
original image bytes, taken from the build's shards). Import reads Label Studio's JSON export
and turns each task's latest submitted annotation into a `Correction` keyed by image digest.
"""

from __future__ import annotations

import json
import random
import re
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow.parquet as pq

from builder.analysis import label_issues as li
from builder.analysis.issues_report import find_issues
from builder.errors import UserError
from builder.images import image_digest
from builder.publish import layout
from builder.publish.corrections import Correction
from builder.recipe.model import load_recipe
from builder.recipe.vocab import Vocabulary

SELECTIONS = ("issues", "uncertain", "random")
FROM_NAME, TO_NAME = "labels", "image"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def labeling_config(vocab: Vocabulary) -> str:
    """Image + why it was chosen + one multiple-choice over the whole vocabulary."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in vocab.names)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        '  <Header value="Why this image: $why"/>\n'
        '  <Header value="Machine scores: $scores"/>\n'
        '  <Header value="Human labels in the source: $human"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="multiple" showInline="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


def select_images(out: Path, select: str, budget: int, seed: int = 0,
                  reference: str | Path | None = None) -> list[dict[str, Any]]:
    """The `budget` images to review, most useful first: [{key, why, priority}]."""
    if select not in SELECTIONS:
        raise UserError(f"--select {select}: choose from {', '.join(SELECTIONS)}")
    if budget < 1:
        raise UserError(f"--budget {budget}: must be at least 1")
    if select == "issues":
        best: dict[str, dict[str, Any]] = {}
        for row in find_issues(out, reference)["rows"]:
            suspects = json.loads(row["suspects"])[:2]
            why = f"{row['kind']} labels: " + "; ".join(f"{s['label']} ({s['why']})" for s in suspects)
            if row["key"] not in best or row["issue_score"] > best[row["key"]]["priority"]:
                best[row["key"]] = {"key": row["key"], "why": why, "priority": row["issue_score"]}
        chosen = sorted(best.values(), key=lambda r: -r["priority"])
    else:
        ev = li.gather(out, reference)
        if select == "uncertain":
            margin = np.abs(ev.scores - ev.thresholds)
            closest = np.nanmin(np.where(np.isnan(margin), np.inf, margin), axis=1)
            order = np.argsort(closest, kind="stable")
            chosen = []
            for i in order:
                k = int(np.nanargmin(np.where(np.isnan(margin[i]), np.inf, margin[i])))
                why = (f"closest to threshold: {ev.names[k]} {ev.scores[i, k]:.2f} vs {ev.thresholds[k]:.2f}"
                       if np.isfinite(closest[i]) else "no candidate label")
                chosen.append({"key": ev.keys[i], "why": why, "priority": float(1 - min(closest[i], 1.0))})
        else:
            keys = list(ev.keys)
            random.Random(seed).shuffle(keys)
            chosen = [{"key": k, "why": f"random sample (seed {seed})", "priority": 0.0} for k in keys]
    return chosen[:budget]


def read_images(out: Path, keys: set[str]) -> dict[str, tuple[bytes, str]]:
    """Original bytes and extension of these records, from the HF parquet or the WebDataset tars."""
    found: dict[str, tuple[bytes, str]] = {}
    for path in sorted((out / layout.HF_DIR).glob("train-*.parquet")):
        for row in pq.read_table(path, columns=["key", "image"]).to_pylist():
            image = row["image"] or {}
            if row["key"] in keys and image.get("bytes"):
                found[row["key"]] = (image["bytes"], Path(image.get("path") or "x.bin").suffix.lstrip("."))
    for path in sorted((out / layout.WDS_DIR).glob("shard-*.tar")):
        if found.keys() >= keys:
            break
        with tarfile.open(path) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if key in keys and key not in found and ext not in ("json", "") and member.isfile():
                    found[key] = (tar.extractfile(member).read(), ext)  # type: ignore[union-attr]
    return found


def _prediction(record: Any, model_version: str, priority: float) -> dict[str, Any]:
    machine = list(record.labels)
    result = [{"id": "tagllm", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
               "value": {"choices": machine}}] if machine else []
    # Label Studio sorts by prediction score (sampling prediction-score-min shows the lowest first)
    return {"model_version": model_version, "score": round(1.0 - priority, 4), "result": result}


def _scores_text(record: Any) -> str:
    parts = [f"{n} {record.scores[n]:.2f}" for n in sorted(record.scores, key=lambda n: -record.scores[n])]
    return ", ".join(parts) or "none (no candidate)"


def _human_text(reference: list[str] | None) -> str:
    if reference is None:
        return "not available"
    return ", ".join(reference) or "no labels"


def export_label_studio(out: str | Path, dest: str | Path | None = None, select: str = "issues", budget: int = 50,
                        image_form: str = "local-files", document_root: str | Path | None = None,
                        url_prefix: str | None = None, seed: int = 0,
                        reference: str | Path | None = None) -> dict[str, Any]:
    """`tagllm review export`: tasks.json + config.xml + images/ in `dest` (default OUT/review/label-studio)."""
    out = layout.require_output(Path(out))
    dest = Path(dest) if dest else out / "review" / "label-studio"
    if image_form not in ("local-files", "url"):
        raise UserError(f"--image-form {image_form}: choose local-files or url")
    if image_form == "url" and not url_prefix:
        raise UserError("--image-form url needs --url-prefix (where images/ will be served)")
    root = Path(document_root).resolve() if document_root else dest.resolve()
    if not dest.resolve().is_relative_to(root):
        raise UserError(f"--document-root {root}: must contain the export folder {dest.resolve()}")
    vocab = load_recipe(out / layout.RECIPE).vocab
    chosen = select_images(out, select, budget, seed, reference)
    records = {r.key: r for r in layout.iter_records(out) if r.key in {c["key"] for c in chosen}}
    images = read_images(out, set(records))
    missing = [c["key"] for c in chosen if c["key"] not in images]
    if missing:
        raise UserError(f"{out}: no image bytes stored for {len(missing)} selected record(s), e.g. {missing[0]!r} "
                        "(the export reads them from the hf or webdataset output)")
    (dest / "images").mkdir(parents=True, exist_ok=True)
    manifest = layout.read_json(out / layout.MANIFEST)
    engine = manifest.get("engine", {})
    model_version = f"tagllm {manifest.get('strategy', '')} {engine.get('model') or engine.get('engine', '')}".strip()
    tasks = []
    for c in chosen:
        record, (data, ext) = records[c["key"]], images[c["key"]]
        digest = image_digest(data)
        name = f"{digest[:12]}-{_SAFE.sub('_', c['key'])[:80]}.{ext or 'bin'}"
        (dest / "images" / name).write_bytes(data)
        rel = (dest.resolve() / "images" / name).relative_to(root).as_posix()
        image = f"/data/local-files/?d={quote(rel)}" if image_form == "local-files" \
            else f"{url_prefix.rstrip('/')}/images/{quote(name)}"  # type: ignore[union-attr]
        tasks.append({"data": {"image": image, "key": c["key"], "digest": digest, "why": c["why"],
                               "scores": _scores_text(record), "simulated": bool(record.simulated),
                               "human": _human_text(record.reference),
                               "human_labels": record.reference},
                      "predictions": [_prediction(record, model_version, c["priority"])]})
    (dest / "tasks.json").write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    (dest / "config.xml").write_text(labeling_config(vocab), encoding="utf-8")
    return {"dest": str(dest), "tasks": len(tasks), "select": select, "image_form": image_form,
            "document_root": str(root), "files": ["tasks.json", "config.xml", "images/"]}


def _annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's latest submitted (not skipped) annotation."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    done.sort(key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
    return done[-1] if done else None


def _chosen_labels(annotation: dict[str, Any], where: str, vocab: Vocabulary) -> list[str]:
    labels: list[str] = []
    for item in annotation.get("result") or []:
        if item.get("from_name") != FROM_NAME or item.get("type") != "choices":
            continue
        labels += list((item.get("value") or {}).get("choices") or [])
    unknown = sorted(set(labels) - set(vocab.names))
    if unknown:
        raise UserError(f"{where}: labels not in the vocabulary: {', '.join(unknown[:5])}")
    return [n for n in vocab.names if n in set(labels)]


def read_export(path: str | Path, vocab: Vocabulary, reviewer: str | None = None) -> tuple[list[Correction], int]:
    """Corrections from a Label Studio JSON export; returns them and the count of unannotated tasks."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable Label Studio JSON export ({exc})") from exc
    if not isinstance(tasks, list):
        raise UserError(f"{path}: expected a list of tasks (Label Studio export type JSON)")
    fixes, unannotated = [], 0
    for n, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or not data.get("digest"):
            raise UserError(f"{path}: task {n} has no data.digest (was it exported by `tagllm review export`?)")
        where = f"{path}: task {task.get('id', n)} (key {data.get('key')!r})"
        annotation = _annotation(task)
        if annotation is None:
            unannotated += 1
            continue
        who = annotation.get("completed_by")
        if isinstance(who, dict):
            who = who.get("id")
        fixes.append(Correction(
            digest=str(data["digest"]), labels=_chosen_labels(annotation, where, vocab), key=str(data.get("key", "")),
            by=reviewer or f"label-studio user {who}", tool="label-studio", task=str(task.get("id", "")),
            at=str(annotation.get("updated_at") or annotation.get("created_at") or ""),
        ))
    return fixes, unannotated
