"""The engines through the CLI, as a user runs them: a tiny local VLM, and serve-sim in its own process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.prompts.constraints import parse_subset
from builder.publish import layout

REPO = Path(__file__).resolve().parents[2]


def test_transformers_engine_on_a_tiny_vlm_from_the_cli(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("xgrammar")
    model = tmp_path / "tiny"
    made = CliRunner().invoke(main, ["dev", "make-tiny-vlm", str(model), "--arch", "qwen2_5_vl"])
    assert made.exit_code == 0, made.output
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build", str(REPO / "recipes/demo.yaml"), "--engine", "transformers",
                                       "--model", str(model), "--limit", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "SIMULATED" not in result.output
    records = list(layout.iter_records(out))
    assert len(records) == 2 and all(r.status == "ok" for r in records)
    groups = {g["name"]: [lab["name"] for lab in g["labels"]]
              for g in __import__("yaml").safe_load((out / "recipe.yaml").read_text())["vocabulary"]["groups"]}
    for record in records:  # a random model: assert structure, never content
        for raw in record.raw:
            if raw["tag"].startswith("subset:"):
                parse_subset(raw["text"], groups[raw["tag"].split(":")[1]])
            if raw["tag"].startswith("verify:"):
                assert 0.0 <= raw["yes_prob"] <= 1.0
    card = (out / "README.md").read_text()
    assert "machine-generated" in card and "SIMULATED" not in card


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("api", ["openai", "http-sglang"])
def test_build_against_serve_sim_started_from_the_cli(api, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "builder", "serve-sim", str(REPO / "recipes/demo.yaml"),
                               "--port", str(port), "--fault-5xx", "0.1", "--fault-drop", "0.05", "--seed", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        out = tmp_path / "out"
        result = CliRunner().invoke(main, ["build", str(REPO / "recipes/demo.yaml"), "--server", url, "--api", api,
                                           "--out", str(out), "--no-progress", "--set", "engine.args={backoff: 0.01}"])
        assert result.exit_code == 0, result.output
        stats = json.loads((out / "stats.json").read_text())
        assert stats["images"] == 25 == stats["ok"] + stats["failed"]
        assert "SIMULATED" in result.output
        served = httpx.get(f"{url}/stats").json()
        assert served["faults"] and served["oracle_misses"] == 0
    finally:
        server.terminate()
        server.wait(timeout=10)
