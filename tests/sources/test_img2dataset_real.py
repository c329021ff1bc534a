"""The real img2dataset 1.47 downloads a few hundred urls from a local server (404s, timeouts, broken bytes
among them); a simulated build of its output accounts for every url with img2dataset's own reasons.

img2dataset lives in its own venv (`make img2dataset`; it pins webdataset<0.3), named by
TAGLLM_IMG2DATASET_PYTHON, as `make test-slow` does.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tinydata import jpeg

pytestmark = pytest.mark.slow

URLS = 300
TIMEOUT = 1  # img2dataset's --timeout (seconds); slow answers take longer
SLOW_SECONDS = TIMEOUT + 2
REASONS = {"404": ("download", "HTTP Error 404"), "slow": ("download", "timed out"),
           "broken": ("resize", "Image decoding error")}


def kind(i: int) -> str:
    if i % 10 == 3:
        return "404"
    if i % 10 == 7:
        return "broken"
    return "slow" if i % 25 == 11 else "ok"


def size(i: int) -> tuple[int, int]:
    return 40 + i % 53, 30 + i % 41


def img2dataset_cli() -> list[str]:
    python = os.environ.get("TAGLLM_IMG2DATASET_PYTHON")
    if not python or not Path(python).is_file():
        pytest.skip("TAGLLM_IMG2DATASET_PYTHON does not name img2dataset's venv python: run `make img2dataset` "
                    "(or `make test-slow`, which sets it)")
    script = Path(python).parent / "img2dataset"
    return [str(script)] if script.is_file() else [python, "-m", "img2dataset.main"]


class Images(BaseHTTPRequestHandler):
    """/{kind}/{i}.jpg: the generated JPEG i, a 404, garbage bytes, or a JPEG after SLOW_SECONDS."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _, what, name = self.path.split("/")
        i = int(name.split(".")[0])
        if what == "404":
            self.send_error(404)
            return
        if what == "slow":
            time.sleep(SLOW_SECONDS)
        body = b"\x00not a jpeg\xff" * 20 if what == "broken" else jpeg(i, size(i))
        try:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on a slow answer
            pass

    def log_message(self, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connections of 16 threads at once: spurious timeouts


@pytest.fixture
def server() -> Iterator[str]:
    httpd = Server(("127.0.0.1", 0), Images)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def img2dataset_images(folder: Path) -> dict[str, bytes]:
    """key -> the image bytes img2dataset stored in its tars."""
    out = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".jpg"):
                    out[m.name.split(".")[0]] = tar.extractfile(m).read()
    return out


def test_real_img2dataset_output_builds_with_every_url_accounted_for(server: str, tmp_path: Path,
                                                                     write_recipe) -> None:
    from builder.cli import main
    from builder.publish import layout

    cli = img2dataset_cli()
    served = {f"{server}/{kind(i)}/{i}.jpg": i for i in range(URLS)}
    with open(tmp_path / "urls.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "caption"])
        writer.writerows((url, f"photo {i}, «{kind(i)}»") for url, i in served.items())
    crawl = tmp_path / "crawl"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled", no_proxy="127.0.0.1")
    started = time.monotonic()
    run = subprocess.run([*cli, str(tmp_path / "urls.csv"), "--input_format", "csv", "--url_col", "url",
                          "--caption_col", "caption", "--output_format", "webdataset", "--output_folder", str(crawl),
                          "--processes_count", "1", "--thread_count", "16", "--number_sample_per_shard", "100",
                          "--resize_mode", "no", "--skip_reencode", "True", "--timeout", str(TIMEOUT),
                          "--retries", "0", "--enable_wandb", "False"],
                         capture_output=True, text=True, env=env, timeout=600)
    download_seconds = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in crawl.glob("0*")) == [f"0000{s}{ext}" for s in range(3)
                                                        for ext in (".parquet", ".tar", "_stats.json")]

    recipe = write_recipe(source={"kind": "img2dataset", "path": str(crawl)},
                          engine={"simulation": {"allow_unlabeled": True}},
                          output={"samples_per_shard": 64, "max_failed_fraction": 0.9})
    started = time.monotonic()
    result = CliRunner().invoke(main, ["build", str(recipe), "--no-progress"])
    build_seconds = time.monotonic() - started
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    stats = json.loads((out / "stats.json").read_text())
    records = list(layout.iter_records(out))
    assert stats["images"] == len(records) == stats["ok"] + stats["failed"] == URLS
    assert {r.url for r in records} == set(served)  # every url once
    stored = img2dataset_images(crawl)
    expected_failed: dict[str, int] = {}
    for r in records:
        i = served[r.url]
        what = kind(i)
        assert r.caption == f"photo {i}, «{what}»"
        if what == "ok":
            assert r.status == "ok", (r.key, r.error, r.detail)
            assert (r.original_width, r.original_height) == (r.width, r.height) == size(i)
            continue
        reason, words = REASONS[what]
        assert (r.status, r.error) == ("failed", reason) and words in r.detail, (r.url, r.error, r.detail)
        assert r.original_width is None
        expected_failed[reason] = expected_failed.get(reason, 0) + 1
    assert stats["failed_by_reason"] == expected_failed
    images = {}
    for path in sorted((out / "webdataset").glob("*.tar")):
        with tarfile.open(path) as tar:
            images.update({m.name.split(".")[0]: tar.extractfile(m).read() for m in tar.getmembers()
                           if m.name.endswith(".jpg")})
    ok = {r.key: r for r in records if r.status == "ok"}
    assert images.keys() == ok.keys() == stored.keys()
    assert all(images[k] == stored[k] == jpeg(served[ok[k].url], size(served[ok[k].url])) for k in ok)
    print(f"\nimg2dataset 1.47: {URLS} urls in {download_seconds:.1f} s; tagllm build {build_seconds:.1f} s: "
          f"ok {stats['ok']}, failed {stats['failed']} {stats['failed_by_reason']}")
