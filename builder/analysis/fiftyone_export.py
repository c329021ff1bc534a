"""Export a build for FiftyOne, in its documented `FiftyOneImageClassificationDataset` layout.

FiftyOne's viewer needs a MongoDB server (`fo.Dataset()` fails without one), so tagllm's own gallery
is the viewer everyone can open; this is the export for those who run FiftyOne. The folder:

    data/<key>.<ext>      the original image bytes of every ok record
    labels.json           the machine labels, each a Classification with its stage-2 score as confidence
    ground_truth.json     the human labels of the source (images that have them)
    candidates.json       every stage-2 candidate with its score; attribute `accepted` says if it was kept
    reviewed.json         the labels a person gave (only when some image was reviewed)
    load_fiftyone.py      loads all of them into one dataset (`python DIR/load_fiftyone.py`)
    README.md

Each labels file is FiftyOne's format: {"classes": [...], "labels": {"<file name without ext>": [{"label",
"confidence", "attributes"}...]}}; FiftyOne's own importer classes read them without a database.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.publish import layout
from builder.publish.gallery import shard_records
from builder.publish.gallery.entries import machine_labels
from builder.publish.gallery.images import shard_images
from builder.recipe.model import load_recipe

FIELDS = {"labels.json": "tagllm", "ground_truth.json": "ground_truth", "candidates.json": "candidates",
          "reviewed.json": "reviewed"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

LOADER = '''"""Load this tagllm export into FiftyOne (needs FiftyOne and its MongoDB).

    python load_fiftyone.py [--no-app]
"""
import sys
from pathlib import Path

import fiftyone as fo

HERE = Path(__file__).resolve().parent
KIND = fo.types.FiftyOneImageClassificationDataset
FIELDS = {fields}

first, *rest = [name for name in FIELDS if (HERE / name).is_file()]
dataset = fo.Dataset.from_dir(dataset_dir=str(HERE), dataset_type=KIND, labels_path=first,
                              label_field=FIELDS[first], name={name!r}, overwrite=True)
for name in rest:  # the other label files, matched to the same images by file path
    dataset.merge_dir(dataset_dir=str(HERE), dataset_type=KIND, labels_path=name, label_field=FIELDS[name])
print(dataset)
if "--no-app" not in sys.argv:
    fo.launch_app(dataset).wait()
'''


def file_stem(key: str, taken: set[str]) -> str:
    """A file name (without extension) for a key: the key where it is safe, else a cleaned one, unique."""
    stem = _UNSAFE.sub("_", key).strip("._") or "image"
    base, n = stem, 1
    while stem in taken:
        n += 1
        stem = f"{base}-{n}"
    taken.add(stem)
    return stem


def _classes(names: list[str], scores: dict[str, float] | None = None,
             accepted: set[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for name in names:
        item: dict[str, Any] = {"label": name}
        if scores is not None and name in scores:
            item["confidence"] = round(float(scores[name]), 6)
        if accepted is not None:
            item["attributes"] = {"accepted": name in accepted}
        out.append(item)
    return out


def export_fiftyone(out: Path, dest: Path, overwrite: bool = False) -> dict[str, Any]:
    """Write the export folder; returns what was written (counts, files, the load command)."""
    out = layout.require_output(Path(out))
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        if not overwrite:
            raise UserError(f"{dest}: not empty; pass --overwrite to replace it")
        shutil.rmtree(dest)
    loaded = load_recipe(out / layout.RECIPE)
    names = loaded.vocab.names
    manifest = layout.read_json(out / layout.MANIFEST)
    (dest / "data").mkdir(parents=True)
    files: dict[str, dict[str, list[dict[str, Any]]]] = {f: {} for f in FIELDS}
    taken: set[str] = set()
    written = failed = 0
    for shard, records in shard_records(out):
        ok = {r.key: r for r in records if r.status == "ok"}
        failed += len(records) - len(ok)
        for key, data in shard_images(out, shard, set(ok)):
            r = ok[key]
            stem = file_stem(key, taken)
            (dest / "data" / f"{stem}.{r.ext or 'jpg'}").write_bytes(data)
            said = machine_labels(r)
            files["labels.json"][stem] = _classes(said, r.scores)
            files["candidates.json"][stem] = _classes(r.candidates, r.scores, set(said))
            if r.reference is not None:
                files["ground_truth.json"][stem] = _classes(r.reference)
            if r.review:
                files["reviewed.json"][stem] = _classes(r.labels)
            written += 1
    if not written:
        shutil.rmtree(dest)
        raise UserError(f"{out}: no ok record with a stored image to export (the export reads the hf or "
                        "webdataset output)")
    present = {}
    for name, labels in files.items():
        if labels or name == "labels.json":
            (dest / name).write_text(json.dumps({"classes": names, "labels": labels}, ensure_ascii=False, indent=1),
                                     encoding="utf-8")
            present[name] = FIELDS[name]
    dataset_name = manifest.get("name") or out.name
    (dest / "load_fiftyone.py").write_text(LOADER.format(fields=repr(present), name=dataset_name), encoding="utf-8")
    simulated = bool(manifest.get("simulated"))
    (dest / "README.md").write_text(_readme(dataset_name, present, written, failed, simulated), encoding="utf-8")
    return {"images": written, "failed_left_out": failed, "fields": present, "dest": str(dest),
            "simulated": simulated, "load": f"python {dest}/load_fiftyone.py"}


def _readme(name: str, present: dict[str, str], images: int, failed: int, simulated: bool) -> str:
    lines = [f"# {name}: tagllm export for FiftyOne", ""]
    if simulated:
        lines += ["> **SIMULATED labels** (tagllm's simulated engine: human labels + seeded noise, not a model).", ""]
    lines += [f"{images} images in FiftyOne's `FiftyOneImageClassificationDataset` layout "
              f"({failed} failed items left out: they have no stored image).", "",
              "| file | FiftyOne field | what |", "|---|---|---|"]
    what = {"labels.json": "machine labels, confidence = stage-2 P(yes)",
            "ground_truth.json": "the source's human labels",
            "candidates.json": "every stage-2 candidate with its score (attribute `accepted`)",
            "reviewed.json": "labels a person gave in `tagllm review`"}
    lines += [f"| `{f}` | `{field}` | {what[f]} |" for f, field in present.items()]
    lines += ["", "Load it (FiftyOne needs its MongoDB server):", "", "```bash", "python load_fiftyone.py", "```", "",
              "or, for the machine labels alone:", "", "```python", "import fiftyone as fo", "",
              'ds = fo.Dataset.from_dir(dataset_dir=".", dataset_type=fo.types.FiftyOneImageClassificationDataset,',
              '                         label_field="tagllm")', "```", ""]
    return "\n".join(lines)
