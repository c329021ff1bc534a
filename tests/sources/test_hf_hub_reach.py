"""Observation 5: a Hub id while the Hub cannot be reached fails in seconds, in one line, without retries.

The "Hub" is a local port: closed (refused), silent (accepts, never answers) or answering 404.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from builder.errors import RunError, UserError
from builder.sources import hf


@pytest.fixture
def hub(monkeypatch):
    """Point huggingface_hub at `url` with look-ups allowed (the suite runs offline)."""
    from huggingface_hub import constants

    def point(url: str) -> None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", url)

    return point


def test_refused_connection_is_one_line_at_once(hub, tmp_path, capfd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    hub(f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(RunError, match=r"cannot reach the Hub at http://127\.0\.0\.1:\d+ to look up 'org/name'") as err:
        hf.check_hub("org/name")
    assert time.monotonic() - started < 5 and "\n" not in str(err.value)
    assert "Retry" not in capfd.readouterr().err


def test_silent_hub_times_out_after_the_look_up_timeout(hub, monkeypatch, capfd):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the backlog) and never answers
    try:
        hub(f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setattr(hf, "HUB_TIMEOUT", 1.0)
        started = time.monotonic()
        with pytest.raises(RunError, match="no answer in time"):
            hf.check_hub("org/name")
        assert time.monotonic() - started < 4
    finally:
        listener.close()
    assert "Retry" not in capfd.readouterr().err


def test_a_missing_dataset_is_a_user_error_not_a_network_one(hub):
    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        hub(f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(UserError, match="no dataset 'org/name' on the Hub"):
            hf.check_hub("org/name")
    finally:
        server.shutdown()


def test_cli_build_of_a_hub_source_fails_fast_in_one_line(tmp_path, small_vocab_file):
    """The replay of observation 5 end to end, with the suite's Hub made unreachable (a closed port)."""
    import os
    import subprocess
    import sys

    import yaml

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "hub", "source": {"kind": "hf", "path": "org/name"}, "vocabulary": str(small_vocab_file),
        "engine": {"kind": "simulated", "simulation": {"allow_unlabeled": True}},
        "output": {"dir": str(tmp_path / "out")}}))
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "builder", "build", str(recipe), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == 1 and took < 20, (took, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: source: cannot reach the Hub"), proc.stderr
    assert not (tmp_path / "out").exists()
