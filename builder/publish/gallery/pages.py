"""The gallery's data files: `data/meta.js` and `data/<view>/page-NNNNN.js`.

Each file is one JSON document wrapped in a single call, with the JSON on a line of its own:

    tagllm.page("all", 0,
    [{"n":0,"key":"aloeL",...}, ...]
    );

A browser refuses `fetch()` of a file:// URL, but runs a script from one, so the wrapped form opens
from the file system as well as from any static host; tools read the JSON line (`read_data`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from builder.publish.gallery.views import ViewBook

DATA = "data"


def page_path(view: str, k: int) -> str:
    return f"{DATA}/{view}/page-{k:05d}.js"


def wrap(call: str, args: list[Any], payload: str) -> str:
    head = ", ".join(json.dumps(a) for a in args)
    return f"tagllm.{call}({head}{',' if head else ''}\n{payload}\n);\n"


def read_data(path: Path) -> Any:
    """The JSON inside one of the gallery's data files."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    return json.loads(lines[1])


def write_data(folder: Path, book: ViewBook, meta: dict[str, Any]) -> dict[str, Any]:
    """Write every view's pages and meta.js into folder/data (swapped in whole, never half-written)."""
    new = folder / f".{DATA}-new"
    if new.exists():
        shutil.rmtree(new)
    new.mkdir(parents=True)
    views: dict[str, dict[str, Any]] = {}
    files = 0
    for view in sorted(book.keys):
        pages = book.pages(view)
        (new / view).mkdir()
        for k, text in enumerate(pages):
            (new / view / f"page-{k:05d}.js").write_text(wrap("page", [view, k], text), encoding="utf-8")
        files += len(pages)
        views[view] = {"count": len(book.keys[view][1]), "pages": len(pages)}
    meta = dict(meta, views=views, page_size=book.page)
    (new / "meta.js").write_text(wrap("meta", [], json.dumps(meta, ensure_ascii=False, separators=(",", ":"))),
                                 encoding="utf-8")
    old = folder / DATA
    if old.exists():
        shutil.rmtree(old)
    new.rename(old)
    return {"views": len(views), "page_files": files}
