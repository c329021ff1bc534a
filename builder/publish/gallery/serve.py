"""`tagllm view`: bring an output's gallery up to date and serve the folder on 127.0.0.1.

Serving is only a convenience (the gallery opens from the file system too); the server is the
standard library's, bound to the loopback address, read-only, and serves the output folder alone.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.publish import layout
from builder.publish.corrections import ISSUES_DIR
from builder.publish.gallery import GALLERY, SUMMARY, write_gallery
from builder.publish.gallery.contact_sheet import SheetOptions, load_options, save_options

PORT_TRIES = 20


def is_stale(out: Path) -> bool:
    """No gallery yet, or an index shard, the issue table or the review export is newer than it."""
    summary = Path(out) / GALLERY / SUMMARY
    if not summary.is_file():
        return True
    made = summary.stat().st_mtime
    inputs = [*(Path(out) / layout.INDEX_DIR).glob("*.stats.json"), Path(out) / ISSUES_DIR / "issues.parquet",
              Path(out) / "review" / "label-studio" / "tasks.json"]
    return any(p.is_file() and p.stat().st_mtime > made for p in inputs)


def refresh(out: Path, rebuild: bool = False, sheet: dict[str, int | None] | None = None) -> dict[str, Any] | None:
    """Write the gallery (and the card, which shows the contact sheet) when missing, stale or asked to."""
    out = layout.require_output(Path(out))
    given = {k: v for k, v in (sheet or {}).items() if v is not None}
    if given:
        options = load_options(out / GALLERY)
        save_options(out / GALLERY, SheetOptions(**{**options.__dict__, **given}))
    if not (rebuild or given or is_stale(out)):
        return None
    summary = write_gallery(out)
    from builder.publish.card import write_card

    write_card(out)
    return summary


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


def start_server(out: Path, port: int) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve OUT on 127.0.0.1 from `port` (or the next free one); returns (server, gallery URL)."""
    handler = functools.partial(_Quiet, directory=str(Path(out).resolve()))
    for candidate in range(port, port + PORT_TRIES):
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", candidate), handler)
        except OSError:
            continue
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/{GALLERY}/index.html"
    raise UserError(f"no free port in {port}..{port + PORT_TRIES - 1} on 127.0.0.1; pass --port")
