"""`tagllm engines`: every engine kind, what it is, what it needs and whether this machine has it."""

from __future__ import annotations

import importlib.util
import json

from click.testing import CliRunner

from builder.cli import main
from builder.recipe.kinds import ENGINES, Kind


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_lists_each_engine_with_what_it_needs_and_whether_it_is_here(monkeypatch):
    monkeypatch.setattr(ENGINES, "_kinds", dict(ENGINES._kinds))  # the plugin below stays in this test
    ENGINES.register(Kind("ghost", "a plugin nobody installed", "tagllm_no_such_module:Engine",
                          ("tagllm_no_such_module",), "ghost"))
    result = CliRunner().invoke(main, ["engines"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    names = ENGINES.names()
    assert names[:4] == ["sglang", "http", "transformers", "simulated"] and names[-1] == "ghost"
    for kind in ENGINES.kinds():
        (i,) = [n for n, line in enumerate(lines) if line.split(" ", 1)[0] == kind.name]
        assert lines[i].split(None, 1)[1] == kind.about
        needs = lines[i + 1].strip()
        for module in kind.needs:
            assert f"{module} ({'installed' if installed(module) else 'missing'})" in needs, needs
        if all(installed(m) for m in kind.needs):
            assert needs.endswith(": ready"), needs
        else:
            assert needs.endswith(kind.install_hint()), needs
    ghost = lines[lines.index(next(line for line in lines if line.startswith("ghost"))) + 1].strip()
    assert ghost == "needs tagllm_no_such_module (missing): pip install -e '.[ghost]' (from a checkout)"
    simulated = next(line for line in lines if line.startswith("simulated"))
    assert "SIMULATED" in simulated
    assert lines[-1].startswith("'auto'") and "sglang" in lines[-1]


def test_json_lines_say_what_is_missing():
    result = CliRunner().invoke(main, ["engines", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in map(json.loads, result.output.splitlines())}
    assert list(rows) == ENGINES.names()
    for row in rows.values():
        assert row["missing"] == [m for m in row["needs"] if not installed(m)]
    assert rows["sglang"]["needs"] == ["sglang", "torch"] and rows["sglang"]["extra"] == "sglang"
    assert rows["transformers"]["extra"] == "hf" and rows["simulated"]["needs"] == []
