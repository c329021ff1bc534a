"""The gallery's HTML: index.html (the filterable grid) and one static page per label.

Templates and the two assets (gallery.js, gallery.css) are package data beside this module. Every
link is relative, so the folder works wherever it is copied or served.
"""

from __future__ import annotations

import shutil
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from builder.publish.gallery.views import FALSE_POS, LABELED, MISSED, REJECTED, ViewBook

ASSETS = ("gallery.js", "gallery.css")
SHOWN = 24  # images per section of a label page


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    folder = resources.files("builder.publish.gallery").joinpath("templates")
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=True,
                              undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def copy_assets(folder: Path) -> None:
    (folder / "assets").mkdir(parents=True, exist_ok=True)
    source = resources.files("builder.publish.gallery").joinpath("templates")
    for name in ASSETS:
        with resources.as_file(source.joinpath(name)) as path:
            shutil.copyfile(path, folder / "assets" / name)


def _fmt(score: float | None) -> str:
    return "n/s" if score is None else f"{score:.2f}"


def render_index(folder: Path, page: dict[str, Any]) -> Path:
    path = folder / "index.html"
    path.write_text(environment().get_template("index.html.j2").render(page_title="", **page), encoding="utf-8")
    return path


def label_sections(book: ViewBook, name: str) -> list[dict[str, Any]]:
    """Most and least confident images of a label, its rejected candidates near the threshold, its errors."""
    labeled = book.with_role(name, LABELED)
    rejected = book.with_role(name, REJECTED)
    false_pos = book.with_role(name, FALSE_POS)
    missed = book.with_role(name, MISSED)
    least = labeled[::-1][:SHOWN] if len(labeled) > SHOWN else labeled[:0]
    sections = [
        {"title": "Most confident", "entries": book.parsed(labeled[:SHOWN]), "of": len(labeled)},
        {"title": "Least confident (labeled, lowest score first)", "entries": book.parsed(least), "of": None},
        {"title": "Rejected by stage 2, highest score first", "entries": book.parsed(rejected[:SHOWN]),
         "of": len(rejected)},
    ]
    if book.counts.get("with_human"):
        sections += [
            {"title": "False positives (not in the human labels), highest score first",
             "entries": book.parsed(false_pos[:SHOWN]), "of": len(false_pos)},
            {"title": "Misses (a human label the machine did not give)", "entries": book.parsed(missed[:SHOWN]),
             "of": len(missed)},
        ]
    return sections


def render_labels(folder: Path, book: ViewBook, page: dict[str, Any]) -> int:
    """labels/<id>.html for every label any image shows; returns how many were written."""
    target = folder / "labels"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    template = environment().get_template("label.html.j2")
    written = 0
    for label in page["labels"]:
        if not label["page"]:
            continue
        html = template.render(page_title=label["name"], label=label, sections=label_sections(book, label["name"]),
                               fmt=_fmt, **page)
        (folder / label["page"]).write_text(html, encoding="utf-8")
        written += 1
    return written
