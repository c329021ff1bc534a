"""Writers of tiny datasets in the official download layouts (COCO, VOC, NUS-WIDE, Open Images, Objects365).

File formats and column names are the real ones; the images are small JPEGs made here. Shared by the
reader tests (tests/sources), the gallery build tests and the reproduction test (tests/run).
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw


def jpeg(colour: tuple[int, int, int] = (200, 60, 60), size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def _xml(image_id: str, objects: list[tuple[str, bool]]) -> str:
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(difficult)}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax>"
        f"<ymax>20</ymax></bndbox></object>" for name, difficult in objects)
    return (f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            f"<source><database>The VOC2007 Database</database></source>"
            f"<size><width>32</width><height>24</height><depth>3</depth></size><segmented>0</segmented>"
            f"{objs}</annotation>")


def write_voc(year_dir: Path, images: dict[str, list[tuple[str, bool]]], splits: dict[str, list[str]],
              skip_image: tuple[str, ...] = ()) -> Path:
    """VOCdevkit/VOC2007: Annotations/<id>.xml, ImageSets/Main/<split>.txt and <class>_<split>.txt, JPEGImages/."""
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (year_dir / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objects in images.items():
        (year_dir / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, objects), encoding="utf-8")
        if image_id not in skip_image:
            (year_dir / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg((30 * len(objects) % 255, 90, 160)))
    classes = sorted({name for objs in images.values() for name, _ in objs})
    for split, ids in splits.items():
        (year_dir / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for cls in classes:  # per-class lists: 1 present, 0 difficult only, -1 absent (as the devkit ships them)
            lines = []
            for i in ids:
                flags = [d for n, d in images[i] if n == cls]
                value = -1 if not flags else (0 if all(flags) else 1)
                lines.append(f"{i} {value:2d}\n")
            (year_dir / "ImageSets" / "Main" / f"{cls}_{split}.txt").write_text("".join(lines))
    return year_dir


def write_nuswide(root: Path, concepts: list[str], split_rows: dict[str, list[tuple[str, set[str]]]],
                  bad_value: tuple[str, str, int] | None = None, skip_image: tuple[str, ...] = ()) -> Path:
    """Concepts81.txt, ImageList/<Split>Imagelist.txt (backslash paths), Groundtruth/TrainTestLabels/, Flickr/."""
    (root / "ImageList").mkdir(parents=True, exist_ok=True)
    (root / "Groundtruth" / "TrainTestLabels").mkdir(parents=True, exist_ok=True)
    (root / "Concepts81.txt").write_text("".join(f"{c}\n" for c in concepts))
    for split, rows in split_rows.items():
        (root / "ImageList" / f"{split}Imagelist.txt").write_text(
            "".join(rel.replace("/", "\\") + "\r\n" for rel, _ in rows))
        for concept in concepts:
            values = ["1" if concept in labels else "0" for _, labels in rows]
            if bad_value and bad_value[0] == concept and bad_value[1] == split:
                values[bad_value[2]] = "-1130179"
            (root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{split}.txt").write_text(
                "".join(v + "\n" for v in values))
        for rel, labels in rows:
            if rel in skip_image:
                continue
            path = root / "Flickr" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg((20 * len(labels) % 255, 150, 60)))
    return root


def write_openimages(root: Path, classes: dict[str, str], rows: list[tuple[str, str, str, str]],
                     header: bool = True) -> Path:
    """validation/<ImageID>.jpg, the labels CSV (ImageID,Source,LabelName,Confidence), class descriptions CSV."""
    (root / "validation").mkdir(parents=True, exist_ok=True)
    with (root / "oidv7-val-annotations-human-imagelabels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageID", "Source", "LabelName", "Confidence"])
        w.writerows(rows)
    with (root / "oidv7-class-descriptions-boxable.csv").open("w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(["LabelName", "DisplayName"])
        w.writerows(classes.items())
    for image_id in sorted({r[0] for r in rows}):
        (root / "validation" / f"{image_id}.jpg").write_bytes(jpeg((80, 80, len(image_id) * 9 % 255)))
    return root


def write_objects365(root: Path, split: str, images: list[tuple[int, str, list[int]]],
                     categories: dict[int, str]) -> Path:
    """<split>/patchN/x.jpg with zhiyuan_objv2_<split>.json whose file_name says images/v1/patchN/x.jpg."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    anns, imgs = [], []
    for image_id, rel, cats in images:
        path = root / split / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg((image_id * 40 % 255, 120, 120)))
        imgs.append({"id": image_id, "file_name": f"images/v1/{rel}", "width": 32, "height": 24})
        for c in cats:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": c, "bbox": [1, 1, 9, 9],
                         "area": 81.0, "iscrowd": 0, "isfake": 0, "isreflected": 0})
    data = {"images": imgs, "annotations": anns, "licenses": [],
            "categories": [{"id": i, "name": n} for i, n in categories.items()]}
    (root / "annotations" / f"zhiyuan_objv2_{split}.json").write_text(json.dumps(data), encoding="utf-8")
    return root


CATEGORIES = [(1, "person", (220, 40, 40)), (3, "car", (40, 200, 40)), (17, "cat", (40, 40, 220)),
              (18, "dog", (230, 200, 30))]


def write_coco_split(root: Path, split: str, n: int, seed: int) -> None:
    """`root/<split>/COCO_<split>_<id>.jpg` and `root/annotations/instances_<split>.json`."""
    rng = random.Random(seed)
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        image_id = 1000 + i
        name = f"COCO_{split}_{image_id:012d}.jpg"
        present = [c for c in CATEGORIES if rng.random() < 0.4] or [rng.choice(CATEGORIES)]
        img = Image.new("RGB", (64, 48), tuple(rng.randrange(90, 170) for _ in range(3)))  # every image differs
        draw = ImageDraw.Draw(img)
        for k, (cat_id, _, colour) in enumerate(present):
            x = 4 + 15 * k
            draw.rectangle([x, 8, x + 12, 40], fill=colour)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id,
                                "bbox": [x, 8, 12, 32], "area": 384.0, "iscrowd": 0, "segmentation": []})
        img.save(root / split / name, format="JPEG", quality=90)
        images.append({"id": image_id, "file_name": name, "width": 64, "height": 48})
    data = {"info": {"description": "tagllm test fixture"}, "licenses": [], "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": "x"} for i, n, _ in CATEGORIES]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data), encoding="utf-8")
