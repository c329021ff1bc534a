"""The gallery a build writes: paged views, thumbnails made once, label pages, the contact sheet in the card.

Structural checks on real builds (the demo's 25 bundled photos, the tiny photo folder with broken
images); what a browser shows is checked in test_gallery_browser.py (slow: headless Chromium).
"""

from __future__ import annotations

import io
import json
import math
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from builder.publish import layout
from builder.publish.gallery import GALLERY, read_summary, write_gallery
from builder.publish.gallery import contact_sheet as cs
from builder.publish.gallery.pages import read_data
from builder.publish.gallery.thumbs import THUMBS
from builder.publish.gallery.views import PAGE, label_id
from builder.recipe.model import load_recipe
from builder.run.build import Builder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo recipe built once for this module (25 photos, simulated engine)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    loaded = load_recipe(REPO / "recipes" / "demo.yaml", [f"output.dir={out}"])
    Builder(loaded, out, progress=False).run()
    return out


def view(out: Path, name: str) -> list[dict]:
    folder = out / GALLERY / "data" / name
    return [e for path in sorted(folder.glob("page-*.js")) for e in read_data(path)]


def meta(out: Path) -> dict:
    return read_data(out / GALLERY / "data" / "meta.js")


def test_every_record_is_one_entry_with_its_labels_scores_and_human_labels(demo: Path) -> None:
    records = list(layout.iter_records(demo))
    entries = view(demo, "all")
    assert len(records) == len(entries) == 25
    assert [e["key"] for e in entries] == [r.key for r in records] and [e["n"] for e in entries] == list(range(25))
    for r, e in zip(records, entries):
        assert e["status"] == "ok"
        assert e["labels"] == {n: round(r.scores[n], 3) for n in r.labels}
        assert e["rejected"] == {n: round(r.scores[n], 3) for n in r.candidates if n not in r.labels}
        assert e["human"] == r.reference
        assert e["false_pos"] == [n for n in r.labels if n not in r.reference]
        assert e["missed"] == [n for n in r.reference if n not in r.labels]
    assert any(e["false_pos"] for e in entries) and any(e["missed"] for e in entries)  # the demo's noise shows
    m = meta(demo)
    assert m["simulated"] is True and m["images"] == 25 and m["views"]["all"] == {"count": 25, "pages": 1}


def test_views_hold_what_their_filter_says_in_their_order(demo: Path) -> None:
    entries = {e["key"]: e for e in view(demo, "all")}
    names = load_recipe(demo / layout.RECIPE).vocab.names
    for i, name in enumerate(names):
        members = view(demo, f"label-{label_id(i, name)}") if (demo / GALLERY / "data" /
                                                              f"label-{label_id(i, name)}").is_dir() else []
        expected = {k for k, e in entries.items() if name in {*e["labels"], *e["rejected"], *e["human"]}}
        assert {e["key"] for e in members} == expected
        scores = [e["labels"].get(name, e["rejected"].get(name, -1.0)) for e in members]
        assert scores == sorted(scores, reverse=True)  # most confident first
    differ = view(demo, "disagree")
    assert {e["key"] for e in differ} == {k for k, e in entries.items() if e["false_pos"] or e["missed"]}
    assert {e["key"] for e in view(demo, "false_pos")} == {k for k, e in entries.items() if e["false_pos"]}
    assert {e["key"] for e in view(demo, "missed")} == {k for k, e in entries.items() if e["missed"]}
    near = view(demo, "near")
    assert near and all(any(abs(s - 0.5) < 0.15 for s in [*e["labels"].values(), *e["rejected"].values()])
                        for e in near)


def test_thumbnails_are_small_jpegs_with_their_disk_cost_stated(demo: Path) -> None:
    entries = view(demo, "all")
    sizes = []
    for e in entries:
        path = demo / GALLERY / e["thumb"]
        with Image.open(path) as img:
            assert img.format == "JPEG" and max(img.size) <= 256 and min(img.size) > 32
        sizes.append(path.stat().st_size)
    summary = read_summary(demo)
    assert summary["thumbnails"] == 25 and summary["thumbnail_bytes"] == sum(sizes)
    assert summary["thumbnail_bytes"] / 25 < 20_000  # a few KB each
    card = (demo / layout.CARD).read_text()
    assert f"25 thumbnails of {sum(sizes) / 25 / 1024:.1f} KB each" in card


def test_html_is_rendered_relative_and_says_simulated(demo: Path) -> None:
    index = (demo / GALLERY / "index.html").read_text()
    assert "SIMULATED labels" in index and 'src="data/meta.js"' in index and 'href="assets/gallery.css"' in index
    label_pages = sorted((demo / GALLERY / "labels").glob("*.html"))
    assert len(label_pages) == read_summary(demo)["label_pages"] > 5
    person = (demo / GALLERY / "labels" / f"{label_id(0, 'person')}.html").read_text()
    assert "Most confident" in person and "SIMULATED" in person and 'src="../thumbs/' in person
    for path in (demo / GALLERY).rglob("*"):
        if path.suffix in (".html", ".js", ".json", ".css"):
            text = path.read_text()
            assert str(demo) not in text and str(REPO) not in text and "file:///" not in text, path


def test_card_shows_the_contact_sheet_beside_it(demo: Path) -> None:
    card = (demo / layout.CARD).read_text()
    assert "](contact_sheet.jpg)" in card and "SIMULATED labels. 12 sample images" in card
    with Image.open(demo / cs.SHEET) as sheet:
        columns, rows = 4, 3
        tile_h = cs.IMAGE_H + 6 + 18 + cs.TEXT_LINES * 20 + 6
        assert sheet.size == (2 * cs.MARGIN + columns * cs.TILE_W + (columns - 1) * cs.GAP,
                              64 + 30 + rows * tile_h + (rows - 1) * cs.GAP + 34)
        pixels = sheet.convert("RGB")
        assert pixels.getpixel((5, 5)) == pytest.approx(cs.COLORS["sim"], abs=12)  # the SIMULATED band
        top = 64 + 30
        for i in range(12):  # every tile holds a photo: its image area is not the empty background
            x = cs.MARGIN + (i % columns) * (cs.TILE_W + cs.GAP) + cs.TILE_W // 2
            y = top + (i // columns) * (tile_h + cs.GAP) + cs.IMAGE_H // 2
            assert pixels.getpixel((x, y)) != (233, 236, 241), i
    from builder.publish.hub import UPLOAD

    assert cs.SHEET in UPLOAD  # pushed with the card, so the Hub shows it


def test_contact_sheet_choice_is_seeded_and_mixes_labels(demo: Path) -> None:
    from builder.publish.gallery import collect

    book, _ = collect(demo, load_recipe(demo / layout.RECIPE))
    first, _ = cs.choose(book, cs.SheetOptions(seed=3))
    again, _ = cs.choose(book, cs.SheetOptions(seed=3))
    other, _ = cs.choose(book, cs.SheetOptions(seed=4))
    keys = [e["key"] for e in first]
    assert keys == [e["key"] for e in again] and keys != [e["key"] for e in other] and len(set(keys)) == 12
    labels = [n for e in first for n in e["labels"]]
    assert len(set(labels)) >= 10  # the demo has 17 labels; the choice spreads over them
    for i, key in enumerate(["stuff", "rocket"]):  # as `tagllm issues` would rank them
        n = next(e["n"] for e in view(demo, "all") if e["key"] == key)
        book._put("issues", -0.9 + i * 0.1, n)
    chosen, count = cs.choose(book, cs.SheetOptions(seed=3, issues=2))
    assert count == 2 and [e["key"] for e in chosen[:2]] == ["stuff", "rocket"] and len(chosen) == 12


def test_pages_stay_small_and_cover_the_view(demo: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(demo, out)
    write_gallery(out, page_size=4)
    m = meta(out)
    assert m["page_size"] == 4 and m["views"]["all"] == {"count": 25, "pages": math.ceil(25 / 4)}
    pages = sorted((out / GALLERY / "data" / "all").glob("page-*.js"))
    assert [len(read_data(p)) for p in pages] == [4] * 6 + [1]
    assert [e["key"] for p in pages for e in read_data(p)] == [e["key"] for e in view(demo, "all")]
    assert PAGE == 100


def test_thumbnails_are_made_once(build) -> None:
    out = build().out
    first = read_summary(out)
    assert first["thumbnails_made"] == first["ok"] and first["thumbnails_kept"] == 0
    from builder.workflows.maintain import relabel

    relabel(out, threshold=0.9)  # rewrites every shard and the gallery, reads no image
    again = read_summary(out)
    assert again["thumbnails_made"] == 0 and again["thumbnails_kept"] == first["ok"]
    thumb = next((out / GALLERY / THUMBS).rglob("*.jpg"))
    thumb.unlink()
    assert write_gallery(out)["thumbnails_made"] == 1


def test_failures_show_with_their_reason(write_recipe, build, photo_folder: Path) -> None:
    (photo_folder / "img03.jpg").write_bytes(b"not an image at all")
    (photo_folder / "img07.jpg").write_bytes(b"")
    out = build(write_recipe()).out
    entries = {e["key"]: e for e in view(out, "all")}
    assert entries["img03"]["status"] == "failed" and entries["img03"]["error"] == "decode"
    assert entries["img07"]["error"] == "empty" and entries["img03"]["thumb"] is None
    assert {e["key"] for e in view(out, "failed")} == {"img03", "img07"}
    assert [e["key"] for e in view(out, "failed-decode")] == ["img03"]
    m = meta(out)
    assert m["failed_by_reason"] == {"decode": 1, "empty": 1} and m["failed"] == 2
    assert all(e["thumb"] for e in entries.values() if e["status"] == "ok")


def test_issue_ranks_and_review_status_reach_the_gallery_and_the_sheet(build) -> None:
    pytest.importorskip("cleanlab", reason="tagllm[review] (cleanlab) is not installed")
    from reviewdata import answers_for, label_studio_export

    from builder.analysis.issues_report import run_issues
    from builder.analysis.label_studio import export_label_studio
    from builder.workflows.review import import_review

    out = build().out
    rows = run_issues(out)["rows"]
    write_gallery(out)
    entries = {e["key"]: e for e in view(out, "all")}
    best = {}
    for row in rows:
        if row["key"] not in best or row["issue_score"] > best[row["key"]]["issue_score"]:
            best[row["key"]] = row
    assert {k: e["issue"]["rank"] for k, e in entries.items() if "issue" in e} == \
        {k: r["rank"] for k, r in best.items()}
    ranked = [e["issue"]["score"] for e in view(out, "issues")]
    assert ranked == sorted(ranked, reverse=True) and len(ranked) == len(best)
    sheet = read_summary(out)["contact_sheet"]
    assert sheet["from_issues"] == 3  # the top issues come first on the sheet

    info = export_label_studio(out, select="issues", budget=4)
    tasks = json.loads((Path(info["dest"]) / "tasks.json").read_text())
    names = load_recipe(out / layout.RECIPE).vocab.names
    answers = dict(list(answers_for(tasks, names).items())[:2])  # two of the four come back reviewed
    export = out.parent / "ls-export.json"
    export.write_text(json.dumps(label_studio_export(tasks, answers)))
    before = (out / cs.SHEET).stat().st_mtime_ns
    import_review(out, export)
    entries = {e["key"]: e for e in view(out, "all")}
    for key, labels in answers.items():
        assert entries[key]["review"]["status"] == "reviewed" and entries[key]["review"]["labels"] == labels
    sent = {t["data"]["key"] for t in tasks} - set(answers)
    assert {k for k, e in entries.items() if e.get("review", {}).get("status") == "sent"} == sent
    assert {e["key"] for e in view(out, "reviewed")} == set(answers)
    assert (out / cs.SHEET).stat().st_mtime_ns > before  # review import rebuilt the contact sheet


def test_view_writes_the_gallery_of_an_older_output_and_serves_it(demo: Path, tmp_path: Path) -> None:
    import shutil

    from click.testing import CliRunner

    from builder.cli import main
    from builder.publish.card import write_card
    from builder.publish.gallery.serve import start_server

    out = tmp_path / "older"
    shutil.copytree(demo, out)
    shutil.rmtree(out / GALLERY)
    (out / cs.SHEET).unlink()
    write_card(out)  # as a build before the gallery left it
    assert "contact_sheet" not in (out / layout.CARD).read_text()
    result = CliRunner().invoke(main, ["view", str(out), "--no-serve", "--sheet-images", "8"])
    assert result.exit_code == 0, result.output
    assert "gallery written" in result.output and "SIMULATED" in result.output
    assert (out / GALLERY / "index.html").is_file() and "](contact_sheet.jpg)" in (out / layout.CARD).read_text()
    assert read_summary(out)["contact_sheet"]["images"] == 8
    result = CliRunner().invoke(main, ["view", str(out), "--no-serve"])
    assert "gallery written" not in result.output  # up to date: nothing rewritten
    write_gallery(out)
    assert read_summary(out)["contact_sheet"]["images"] == 8  # the sheet's choice is kept for rebuilds
    server, url = start_server(out, 18765)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/gallery/index.html")
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(url, timeout=10) as page:
            assert "SIMULATED" in page.read().decode()
        first = read_data_url(url.replace("index.html", "data/all/page-00000.js"))
        assert len(first) == 25
    finally:
        server.shutdown()
        server.server_close()


def read_data_url(url: str) -> list:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(io.TextIOWrapper(resp, encoding="utf-8").read().split("\n")[1])


def test_thumbnails_are_upright_and_fitted() -> None:
    from builder.publish.gallery.images import make_thumbnail

    img = Image.new("RGB", (600, 200), (200, 30, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    with Image.open(io.BytesIO(make_thumbnail(buf.getvalue()))) as thumb:
        assert thumb.size == (85, 256)  # upright (portrait), longest side 256
    png = io.BytesIO()
    Image.new("RGBA", (100, 50), (0, 0, 0, 0)).save(png, "PNG")
    with Image.open(io.BytesIO(make_thumbnail(png.getvalue()))) as thumb:
        assert thumb.size == (100, 50) and thumb.getpixel((10, 10)) == pytest.approx((255, 255, 255), abs=3)


def test_tagllm_gallery_0_leaves_it_to_tagllm_view(build, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGLLM_GALLERY", "0")
    out = build().out
    assert not (out / GALLERY).exists() and not (out / cs.SHEET).exists()
    assert "contact_sheet" not in (out / layout.CARD).read_text()
    from builder.publish.gallery.serve import refresh

    assert refresh(out)["images"] == 12 and "](contact_sheet.jpg)" in (out / layout.CARD).read_text()
