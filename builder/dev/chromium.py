"""Headless Chromium (Debian's `chromium` package) for the gallery's tests and the README's pictures.

`open_page` loads a page, lets its scripts run (a virtual-time budget), and returns the DOM as it
then is (`--dump-dom`) or a screenshot, with every console message the page logged (Chromium
writes them to stderr with `--enable-logging=stderr`). `python -m builder.dev.chromium` makes the
README's pictures from a built demo: the gallery's screenshot and the contact sheet, as small PNGs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

NAMES = ("chromium", "chromium-browser", "google-chrome")
_CONSOLE = re.compile(r'CONSOLE[^\]]*\] "(?P<text>.*)", source: (?P<source>\S*) \((?P<line>\d+)\)')


@dataclass
class PageRun:
    returncode: int
    dom: str = ""
    console: list[str] = field(default_factory=list)
    stderr: str = ""


def find_chromium() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def open_page(url: str, screenshot: Path | None = None, size: tuple[int, int] = (1280, 1000),
              budget_ms: int = 5000, timeout: float = 120) -> PageRun:
    """Load `url` headless; the DOM after its scripts ran, or a screenshot to `screenshot`."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="tagllm-chromium-") as profile:
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}",
                "--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget_ms}",
                f"--window-size={size[0]},{size[1]}"]
        args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=timeout)
    console = [f"{m['text']} ({m['source']}:{m['line']})" for m in _CONSOLE.finditer(done.stderr)]
    return PageRun(done.returncode, done.stdout, console, done.stderr)


def small_png(source: Path, target: Path, width: int, colors: int = 256) -> Path:
    """`source` scaled to `width` and saved as a palette PNG (small enough to commit)."""
    with Image.open(source) as img:
        img = img.convert("RGB")
        if img.width > width:
            img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG) \
            .save(target, optimize=True)
    return target


def docs_images(out: Path, docs: Path, width: int = 1100) -> list[Path]:
    """The README's pictures of a built output: its gallery (a screenshot) and its contact sheet."""
    docs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "gallery.png"
        run = open_page((Path(out) / "gallery" / "index.html").resolve().as_uri(), screenshot=shot, size=(1280, 900))
        if run.returncode != 0 or not shot.is_file():
            raise RuntimeError(f"chromium failed ({run.returncode}): {run.stderr[-500:]}")
        if run.console:
            raise RuntimeError("the gallery logged to the console: " + "; ".join(run.console))
        made = [small_png(shot, docs / "gallery.png", width)]
    made.append(small_png(Path(out) / "contact_sheet.jpg", docs / "contact_sheet.png", width))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description="The README's pictures from a built output folder.")
    parser.add_argument("out", type=Path, help="a build with its gallery (tagllm build / tagllm view --no-serve)")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args()
    for path in docs_images(args.out, args.docs, args.width):
        print(f"{path} ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
