"""The gallery: static files under OUT/gallery/ that show every image with its labels.

    gallery/index.html            the grid, with filters (label, score band, human labels, issues, status)
    gallery/labels/<id>.html      per label: most and least confident images, rejections, errors
    gallery/data/meta.js          counts, labels, thresholds, the views and their page counts
    gallery/data/<view>/page-*.js the entries of each view, PAGE per file (see pages.py)
    gallery/thumbs/xx/*.jpg       thumbnails, made once per key (see thumbs.py)
    gallery/summary.json          what the gallery holds and costs (read by the card)
    contact_sheet.jpg             beside the card: sample images with their labels (contact_sheet.py)

Written at the end of every build, `relabel`, `retry-failed` and `review import` (after the
build's totals, before the card), after `tagllm issues`, and by `tagllm view` for older outputs.
No server is needed: it opens from the file system or any static host.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import builder.publish.gallery.entries as E
from builder import __version__
from builder.publish import layout
from builder.publish.gallery import pages, render
from builder.publish.gallery.contact_sheet import write_contact_sheet
from builder.publish.gallery.thumbs import Thumbnailer, ThumbReport
from builder.publish.gallery.views import PAGE, ViewBook, label_id, view_titles
from builder.recipe.model import load_recipe
from builder.records import Record

GALLERY = "gallery"
SUMMARY = "summary.json"
COLUMNS = ["key", "status", "labels", "scores", "candidates", "reference", "error", "detail", "width", "height",
           "review"]  # everything but the raw answers, which the gallery never shows


def shard_records(out: Path) -> Iterator[tuple[int, list[Record]]]:
    """(shard, its records) without the raw answers, in source order, one shard in memory at a time."""
    for shard in layout.completed_shards(out):
        path = layout.index_path(out, shard)
        names = set(pq.read_schema(path).names)
        rows = pq.read_table(path, columns=[c for c in COLUMNS if c in names]).to_pylist()
        yield shard, [layout.row_record(row) for row in rows]


def after_build(out: Path) -> dict[str, Any] | None:
    """What a build, `relabel`, `review import` and `tagllm issues` call: the gallery, unless
    TAGLLM_GALLERY=0 (then an older gallery is removed, and `tagllm view` writes it when wanted)."""
    if os.environ.get("TAGLLM_GALLERY", "1").strip().lower() in ("0", "false", "no", "off"):
        shutil.rmtree(Path(out) / GALLERY, ignore_errors=True)
        (Path(out) / "contact_sheet.jpg").unlink(missing_ok=True)
        return None
    return write_gallery(out)


def collect(out: Path, loaded: Any, maker: Thumbnailer | None = None,
            page_size: int = PAGE) -> tuple[ViewBook, dict[str, dict[str, Any]]]:
    """Every record's entry in its views (thumbnails made on the way when `maker` is given), and the issues."""
    names = loaded.vocab.names
    issues, sent = E.read_issue_ranks(out), E.read_sent_for_review(out)
    book = ViewBook(names, {n: loaded.threshold(n) for n in names}, loaded.recipe.tagging.threshold, page_size)
    for shard, records in shard_records(out):
        thumbs = maker.shard(shard, [r.key for r in records if r.status == "ok"]) if maker else {}
        for r in records:
            book.add(E.make_entry(r, shard, thumbs.get(r.key), issues.get(r.key), r.key in sent))
    return book, issues


def write_gallery(out: Path, thumbnails: bool = True, page_size: int = PAGE) -> dict[str, Any]:
    """Write (or bring up to date) OUT/gallery; returns its summary (also saved as gallery/summary.json).

    `thumbnails=False` reads no image (entries then have none): for measuring the rest alone."""
    start = time.perf_counter()
    out = layout.require_output(Path(out))
    folder = out / GALLERY
    folder.mkdir(exist_ok=True)
    loaded = load_recipe(out / layout.RECIPE)
    names = loaded.vocab.names
    manifest = layout.read_json(out / layout.MANIFEST)
    simulated = bool(manifest.get("simulated"))
    maker = Thumbnailer(folder, out) if thumbnails else None
    book, issues = collect(out, loaded, maker, page_size)
    report = maker.close() if maker else ThumbReport()
    page = page_values(loaded, book, simulated, bool(issues), report)
    titles = view_titles(names)
    meta = {k: page[k] for k in ("title", "simulated", "images", "ok", "failed", "threshold", "has_human",
                                 "failed_by_reason")}
    meta.update(near=E.NEAR, issue_shown=E.ISSUE_SHOWN, labels=page["labels"],
                thresholds={n: loaded.threshold(n) for n in names},
                view_titles={v: titles.get(v, v.replace("failed-", "failed: ")) for v in book.keys})
    written = pages.write_data(folder, book, meta)
    render.copy_assets(folder)
    render.render_index(folder, page)
    label_pages = render.render_labels(folder, book, page)
    sheet = write_contact_sheet(out, book, page["title"], simulated)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    summary = {
        "tagllm_version": __version__, "simulated": simulated, "images": page["images"], "ok": page["ok"],
        "failed": page["failed"], "views": written["views"], "page_files": written["page_files"],
        "label_pages": label_pages, "thumbnails": report.files, "thumbnails_made": report.made,
        "thumbnails_kept": report.kept, "thumbnails_unreadable": len(report.unreadable),
        "thumbnail_bytes": report.bytes, "thumbnail_seconds": report.seconds,
        "bytes": size, "first_screen_bytes": first_screen_bytes(folder),
        "seconds": round(time.perf_counter() - start, 3), "issues_ranked": bool(issues), "contact_sheet": sheet,
    }
    (folder / SUMMARY).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def page_values(loaded: Any, book: ViewBook, simulated: bool, issues_ranked: bool,
                report: ThumbReport) -> dict[str, Any]:
    """What the header, the controls and the label pages show."""
    names = loaded.vocab.names
    counts = book.counts
    images = len(book.texts)
    failed = counts.get("failed", 0)
    by_reason = {v.removeprefix("failed-"): len(book.keys[v][1]) for v in sorted(book.keys)
                 if v.startswith("failed-")}
    labels = []
    for i, name in enumerate(names):
        lid = label_id(i, name)
        shown = f"label-{lid}" in book.keys
        labels.append({"id": lid, "name": name, "threshold": loaded.threshold(name),
                       "machine": counts.get(f"machine:{name}", 0), "human": counts.get(f"human:{name}", 0),
                       "page": f"labels/{lid}.html" if shown else None})
    per_image = report.bytes / report.files / 1024 if report.files else 0
    footer = (f"tagllm {__version__} gallery: {images} images; thumbnails {report.files} files, "
              f"{report.bytes / 1e6:.1f} MB ({per_image:.1f} KB each).")
    return {"title": loaded.recipe.card.pretty_name or loaded.recipe.name, "simulated": simulated,
            "images": images, "ok": images - failed, "failed": failed, "failed_by_reason": by_reason,
            "reviewed": len(book.keys.get("reviewed", ((), ()))[1]), "threshold": loaded.recipe.tagging.threshold,
            "own_thresholds": len(loaded.thresholds), "has_human": bool(counts.get("with_human")),
            "with_human": counts.get("with_human", 0), "near": E.NEAR, "issue_shown": E.ISSUE_SHOWN,
            "labels": labels,
            "issues_ranked": issues_ranked, "footer": footer}


def first_screen_bytes(folder: Path) -> int:
    """What a browser reads before the first tiles show: the page, its assets, meta and one page."""
    parts = [folder / "index.html", folder / "assets" / "gallery.js", folder / "assets" / "gallery.css",
             folder / pages.DATA / "meta.js", folder / pages.page_path("all", 0)]
    return sum(p.stat().st_size for p in parts if p.is_file())


def read_summary(out: Path) -> dict[str, Any] | None:
    path = Path(out) / GALLERY / SUMMARY
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def card_info(out: Path) -> dict[str, Any] | None:
    """What the card says about the gallery and shows of the contact sheet (None before any gallery)."""
    summary = read_summary(out)
    if summary is None:
        return None
    sheet = summary.get("contact_sheet") if (Path(out) / "contact_sheet.jpg").is_file() else None
    caption = None
    if sheet:
        caption = ("SIMULATED labels. " if summary.get("simulated") else "") + (
                   f"{sheet['images']} sample images (seeded choice, seed {sheet['seed']}"
                   + (f", the top {sheet['from_issues']} label issues first" if sheet["from_issues"] else "")
                   + ") with their machine labels and scores; a cross marks a label the human labels lack, "
                   "a circle a human label the machine missed.")
    files = summary.get("thumbnails") or 0
    return {"sheet": sheet and sheet["path"], "sheet_images": sheet and sheet["images"], "caption": caption,
            "mb": f"{summary['bytes'] / 1e6:.1f}", "thumbnails": files,
            "thumb_kb": f"{summary['thumbnail_bytes'] / files / 1024:.1f}" if files else "0"}
