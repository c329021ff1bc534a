"""The contact sheet: a grid of sample images with their labels drawn under each, beside the card.

The Hub renders an image the card links to, so a visitor sees samples and their labels before any
table. The choice is seeded: the top label issues first when `tagllm issues` ranked them (as many
as `issues` asks), then images in a seeded order that add a label not shown yet, then any. Under
each image: the machine labels with their scores (a cross marks one the human labels lack), the
human labels the machine missed (a circle), and the issue rank. Drawn with Pillow in DejaVu Sans
(Debian's fonts-dejavu-core) or, without it, Pillow's own font.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from builder.publish import layout
from builder.publish.gallery.images import images_of, open_rgb
from builder.publish.gallery.views import ViewBook

SHEET = layout.CONTACT_SHEET
OPTIONS = "sheet-options.json"  # under gallery/: the choice `tagllm view --sheet-*` made, kept for rebuilds
TILE_W, IMAGE_H, TEXT_LINES, GAP, MARGIN = 300, 210, 3, 12, 16
FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf")
MONO = ("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", "/usr/share/fonts/TTF/DejaVuSansMono.ttf")
COLORS = {"ok": (31, 122, 61), "fp": (179, 38, 30), "miss": (154, 91, 0), "muted": (93, 102, 117),
          "fg": (29, 35, 48), "issue": (107, 78, 0), "sim": (90, 30, 140)}
ISSUE_SHOWN = 0.5  # an issue rank is drawn for the top issues chosen and for any issue score from this on
POOL = 4000  # records the seeded choice looks at (a sample of them in a large build)


@dataclass
class SheetOptions:
    images: int = 12
    seed: int = 0
    issues: int = 3  # top label issues shown first, when ranked
    columns: int = 4


def load_options(gallery: Path) -> SheetOptions:
    path = gallery / OPTIONS
    if not path.is_file():
        return SheetOptions()
    return SheetOptions(**{k: int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()
                           if k in SheetOptions.__dataclass_fields__})


def save_options(gallery: Path, options: SheetOptions) -> None:
    gallery.mkdir(parents=True, exist_ok=True)
    (gallery / OPTIONS).write_text(json.dumps(asdict(options)), encoding="utf-8")


@lru_cache(maxsize=8)
def font(size: int, mono: bool = False) -> tuple[ImageFont.ImageFont, bool]:
    """(font, has the check/cross/circle glyphs); Pillow's built-in font where DejaVu is absent."""
    for path in MONO if mono else FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size), True
    return ImageFont.load_default(size), False


def choose(book: ViewBook, options: SheetOptions) -> tuple[list[dict[str, Any]], int]:
    """The entries to show: the top label issues first, then a seeded order that mixes labels.
    Also: how many are there as top issues."""
    chosen: list[dict[str, Any]] = []
    if options.issues and "issues" in book.keys:
        chosen = book.parsed(book.order("issues")[:min(options.issues, options.images)])
    from_issues = len(chosen)
    rng = random.Random(options.seed)
    ok = list(book.ok)
    pool = book.parsed(rng.sample(ok, min(len(ok), POOL)))
    taken = {e["key"] for e in chosen}
    shown = {n for e in chosen for n in e["labels"]}
    for entry in pool:  # first: images that bring a label not shown yet
        if len(chosen) >= options.images:
            break
        new = set(entry["labels"]) - shown
        if new and entry["key"] not in taken:
            chosen.append(entry)
            taken.add(entry["key"])
            shown |= new
    chosen += [e for e in pool if e["key"] not in taken][:options.images - len(chosen)]
    return chosen, from_issues


def _lines(entry: dict[str, Any], show_issue: bool, fancy: bool, width: int,
           draw: ImageDraw.ImageDraw) -> list[list[tuple[str, str]]]:
    """The text under one image as lines of (text, colour) pieces, wrapped to `width`."""
    yes, no, gap = ("\u2713 ", "\u2717 ", "\u25cb ") if fancy else ("", "x ", "o ")
    wrong = set(entry.get("false_pos") or ())
    pieces = [((no if name in wrong else yes) + f"{name} {score or 0:.2f}", "fp" if name in wrong else "ok")
              for name, score in entry["labels"].items()]
    pieces += [(gap + name, "miss") for name in entry.get("missed") or ()]
    if not pieces:
        pieces.append(("no label", "muted"))
    review = entry.get("review") or {}
    if review.get("status") == "reviewed":
        pieces.append(("reviewed: " + (", ".join(review.get("labels") or []) or "no label"), "muted"))
    if show_issue and (issue := entry.get("issue")):
        kind = "human-label" if issue["kind"] == "reference" else "machine-label"
        pieces.append((f"{kind} issue #{issue['rank']} ({issue['score']:.2f})", "issue"))
    small = font(15)[0]
    lines: list[list[tuple[str, str]]] = [[]]
    used = 0.0
    for text, color in pieces:
        w = draw.textlength(text + "  ", font=small)
        if lines[-1] and used + w > width:
            lines.append([])
            used = 0.0
        lines[-1].append((text, color))
        used += w
    if len(lines) > TEXT_LINES:
        rest = sum(len(line) for line in lines[TEXT_LINES - 1:])
        lines = lines[:TEXT_LINES - 1] + [[(f"+{rest} more", "muted")]]
    return lines


def render_sheet(tiles: list[tuple[dict[str, Any], Image.Image | None, bool]], title: str,
                 subtitle: str, simulated: bool, columns: int) -> Image.Image:
    big, small, mono = font(20)[0], font(15)[0], font(13, mono=True)[0]
    fancy = font(15)[1]
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, -(-len(tiles) // columns))
    line_h, key_h = 20, 18
    tile_h = IMAGE_H + 6 + key_h + TEXT_LINES * line_h + 6
    head_h = 64 if simulated else 40
    width = MARGIN * 2 + columns * TILE_W + (columns - 1) * GAP
    height = head_h + 30 + rows * tile_h + (rows - 1) * GAP + 34
    sheet = Image.new("RGB", (width, height), (247, 248, 250))
    draw = ImageDraw.Draw(sheet)
    y = 0
    if simulated:
        draw.rectangle((0, 0, width, 30), fill=COLORS["sim"])
        draw.text((MARGIN, 5), "SIMULATED labels (simulated engine: human labels + seeded noise, not a model)",
                  font=small, fill=(255, 255, 255))
        y = 30
    draw.text((MARGIN, y + 8), title, font=big, fill=COLORS["fg"])
    draw.text((MARGIN, y + 36), subtitle, font=small, fill=COLORS["muted"])
    top = head_h + 30
    for i, (entry, img, show_issue) in enumerate(tiles):
        x0 = MARGIN + (i % columns) * (TILE_W + GAP)
        y0 = top + (i // columns) * (tile_h + GAP)
        draw.rectangle((x0, y0, x0 + TILE_W - 1, y0 + tile_h - 1), fill=(255, 255, 255), outline=(216, 221, 230))
        draw.rectangle((x0 + 1, y0 + 1, x0 + TILE_W - 2, y0 + IMAGE_H), fill=(233, 236, 241))
        if img is not None:
            sheet.paste(img, (x0 + (TILE_W - img.width) // 2, y0 + 1 + (IMAGE_H - img.height) // 2))
        ty = y0 + IMAGE_H + 6
        draw.text((x0 + 8, ty), entry["key"][:40], font=mono, fill=COLORS["muted"])
        ty += key_h
        for line in _lines(entry, show_issue, fancy, TILE_W - 16, draw):
            tx = x0 + 8
            for text, color in line:
                draw.text((tx, ty), text, font=small, fill=COLORS[color])
                tx += draw.textlength(text + "  ", font=small)
            ty += line_h
    legend = ("machine labels with their scores; " + ("\u2717" if fancy else "x") + " not in the human labels, "
              + ("\u25cb" if fancy else "o") + " a human label the machine missed")
    draw.text((MARGIN, height - 26), legend, font=small, fill=COLORS["muted"])
    return sheet


def write_contact_sheet(out: Path, book: ViewBook, title: str, simulated: bool,
                        options: SheetOptions | None = None) -> dict[str, Any] | None:
    """OUT/contact_sheet.jpg; None (and any old sheet removed) when no image is ok."""
    options = options or load_options(out / "gallery")
    chosen, from_issues = choose(book, options)
    path = Path(out) / SHEET
    if not chosen:
        path.unlink(missing_ok=True)
        return None
    wanted: dict[int, set[str]] = {}
    for e in chosen:
        wanted.setdefault(e["shard"], set()).add(e["key"])
    images: dict[str, Image.Image] = {}
    for key, data in images_of(Path(out), wanted):
        try:
            images[key] = open_rgb(data, (TILE_W - 2, IMAGE_H))
        except (OSError, ValueError, SyntaxError):
            continue
    top = {e["key"] for e in chosen[:from_issues]}
    tiles = [(e, images.get(e["key"]), e["key"] in top or (e.get("issue") or {}).get("score", 0) >= ISSUE_SHOWN)
             for e in chosen]
    subtitle = f"{len(chosen)} of {len(book.ok)} labeled images (seed {options.seed}" + \
        (f"; the top {from_issues} label issues first)" if from_issues else ")")
    sheet = render_sheet(tiles, title, subtitle, simulated, options.columns)
    sheet.save(path, "JPEG", quality=88, subsampling=0, optimize=True)  # 4:4:4 keeps the text crisp
    return {"path": SHEET, "images": len(chosen), "from_issues": from_issues, "seed": options.seed,
            "size": list(sheet.size), "bytes": path.stat().st_size}
