"""The gallery in a real browser: headless Chromium (Debian's `chromium`) opens the demo's gallery.

It runs the page's scripts, then the DOM is read back (`--dump-dom`): the 25 images with their labels,
a filter (set through the URL, as the controls set it) that changes what is shown, no console
message; a screenshot is looked at for size and content. `make test-slow` installs Chromium.
"""

from __future__ import annotations

import html.parser
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from builder.dev.chromium import find_chromium, open_page
from builder.publish import layout
from builder.publish.gallery import GALLERY
from builder.publish.gallery.serve import start_server
from builder.publish.gallery.views import label_id
from builder.recipe.model import load_recipe
from builder.run.build import Builder

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_chromium() is None, reason="no chromium (make test-slow installs it)")]
REPO = Path(__file__).resolve().parents[2]


class Tiles(html.parser.HTMLParser):
    """The tiles of a dumped DOM: key -> the labels of its chips, by chip class; and the status line."""

    def __init__(self) -> None:
        super().__init__()
        self.tiles: dict[str, dict[str, list[str]]] = {}
        self.status = ""
        self._key: str | None = None
        self._in_status = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "figure" and "tile" in classes:
            self._key = a["data-key"]
            self.tiles[self._key] = {}
        elif tag == "span" and "chip" in classes and self._key and a.get("data-label"):
            self.tiles[self._key].setdefault(classes[1], []).append(a["data-label"])
        self._in_status = a.get("id") == "status"

    def handle_data(self, data: str) -> None:
        if self._in_status:
            self.status += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._key = None
        self._in_status = False


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    loaded = load_recipe(REPO / "recipes" / "demo.yaml", [f"output.dir={out}"])
    Builder(loaded, out, progress=False).run()
    return out


def shown(url: str, app: bool = True) -> Tiles:
    run = open_page(url)
    assert run.returncode == 0, run.stderr[-1500:]
    assert run.console == [], run.console  # no error, no warning, no message at all
    assert 'data-state="ready"' in run.dom or not app
    tiles = Tiles()
    tiles.feed(run.dom)
    return tiles


def test_the_gallery_shows_the_demos_25_images_with_their_labels(demo: Path) -> None:
    page = (demo / GALLERY / "index.html").resolve().as_uri()
    tiles = shown(page)
    records = list(layout.iter_records(demo))
    assert list(tiles.tiles) == [r.key for r in records] and len(records) == 25
    assert "showing 1\u201325 of 25" in tiles.status
    for r in records:
        chips = tiles.tiles[r.key]
        human = set(r.reference)
        assert sorted(chips.get("ok", []) + chips.get("fp", [])) == sorted(r.labels)
        assert set(chips.get("fp", [])) == set(r.labels) - human
        assert set(chips.get("miss", [])) == human - set(r.labels)
        assert set(chips.get("rej", [])) == set(r.candidates) - set(r.labels) - human
    assert any(t.get("fp") for t in tiles.tiles.values()) and any(t.get("miss") for t in tiles.tiles.values())


def test_a_filter_changes_what_is_shown(demo: Path) -> None:
    page = (demo / GALLERY / "index.html").resolve().as_uri()
    records = list(layout.iter_records(demo))
    person = label_id(0, "person")
    tiles = shown(f"{page}#label={person}")
    expected = [r.key for r in records if "person" in {*r.labels, *r.candidates, *r.reference}]
    assert sorted(tiles.tiles) == sorted(expected) and 0 < len(expected) < 25
    position = {r.key: i for i, r in enumerate(records)}
    score = {r.key: round(r.scores.get("person", -1.0), 3) for r in records}
    assert list(tiles.tiles) == sorted(expected, key=lambda k: (-score[k], position[k]))  # most confident first
    differ = shown(f"{page}#disagree=any")
    assert sorted(differ.tiles) == sorted(r.key for r in records if set(r.labels) != set(r.reference))
    both = shown(f"{page}#label={person}&disagree=false_pos")
    assert sorted(both.tiles) == sorted(r.key for r in records if "person" in r.labels and "person" not in r.reference)
    none = shown(f"{page}#status=failed")
    assert none.tiles == {} and "no image matches" in none.status


def test_served_on_loopback_and_screenshot_looks_like_a_gallery(demo: Path, tmp_path: Path) -> None:
    server, url = start_server(demo, 18900)
    try:
        tiles = shown(url)
        assert len(tiles.tiles) == 25
        shot = tmp_path / "gallery.png"
        run = open_page(url, screenshot=shot, size=(1280, 900))
        assert run.returncode == 0 and run.console == []
    finally:
        server.shutdown()
        server.server_close()
    with Image.open(shot) as img:
        assert img.size == (1280, 900)
        rgb = img.convert("RGB")
        assert rgb.getpixel((5, 3)) == pytest.approx((90, 30, 140), abs=8)  # the SIMULATED band on top
        photos = rgb.crop((0, 300, 1280, 900))
        assert max(ImageStat.Stat(photos).stddev) > 40  # thumbnails, not an empty page
    label_page = (demo / GALLERY / "labels" / f"{label_id(0, 'person')}.html").resolve().as_uri()
    tiles = shown(label_page, app=False)
    assert tiles.tiles and all("person" in {*c.get("ok", []), *c.get("fp", []), *c.get("miss", []),
                                            *c.get("rej", [])} for c in tiles.tiles.values())
