"""Smoke test of `make bench`: run_all.py --quick prints every figure line and the machine."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parent / "run_all.py"
SGLANG_PY = Path(os.environ.get("REAL_CACHE") or RUN_ALL.parents[2] / ".cache" / "real") / "sglang-venv" / "bin" / "python"
FIGURE = re.compile(r"^(P1|P2|P3|MEM|SCALE|S1|S2|ISSUES-M|ISSUES-H|SGLANG-SERVER|STORE) .*: ratio \d+\.\d+ \(.*\) goal .+ (PASS|MISS)$")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_all_quick_prints_every_figure() -> None:
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--quick"], capture_output=True, text=True, timeout=900)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = [line for line in lines if not line.startswith("#") and FIGURE.match(line)]
    scaling = ["S1", "S2"] if importlib.util.find_spec("ray") else ["S2"]  # S1 needs tagllm[ray]
    sglang = ["SGLANG-SERVER"] if SGLANG_PY.exists() else []  # skipped (a `#` line) without the SGLang venv
    store = ["STORE"] if importlib.util.find_spec("s3fs") and importlib.util.find_spec("moto") else []
    assert [f.split(" ", 1)[0] for f in figures] == ["P1", "P2", "P3", "MEM", "SCALE", *scaling, "ISSUES-M", "ISSUES-H",
                                                     *sglang, *store], "\n".join(lines)
    assert lines[-1].startswith("machine: ") and "cores" in lines[-1] and "Python" in lines[-1]
    others = [line for line in lines if not line.startswith("#") and line not in figures and line != lines[-1]]
    assert not others, others
