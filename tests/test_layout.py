"""The package layout follows the flow: imports only point down the rooms, and no module grows too big."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "builder"

# Lower rooms first. A module may import its own room and any room ranked below it, never above.
RANKS = {
    "core": 0,       # builder/__init__, errors, records
    "images": 0,     # decode and normalise images (prepare, thread pool, worker processes)
    "recipe": 1,
    "prompts": 2,
    "sources": 2,
    "engines": 3,
    "method": 4,
    "publish": 5,    # output layout, writers, stats, cost, card, hub
    "ask": 6,        # asker and request caches (builds and calibration alike)
    "run": 7,        # the build loop only
    "analysis": 8,   # reads what builds write
    "workflows": 9,  # calibrate, reproduce, relabel / retry-failed, review import
    "dev": 10,
    "cli": 11,
}
MAX_LINES = 350


def room(module: str) -> str:
    if module == "builder.__main__":
        return "cli"
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in RANKS:
        return "core"
    return parts[1]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("builder")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("builder"):
            found.add(node.module)
    return found


def test_imports_only_point_down_the_flow():
    wrong = []
    for name, path in sorted(modules().items()):
        for target in sorted(imports_of(path)):
            if RANKS[room(target)] > RANKS[room(name)]:
                wrong.append(f"{name} ({room(name)}) imports {target} ({room(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    mods = modules()
    graph = {name: {t for t in imports_of(path) if t in mods and t != name} for name, path in mods.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*stack, node])):
                return cycle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [])):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_modules_stay_small():
    big = {name: n for name, path in modules().items()
           if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_rooms_are_the_flow():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert rooms == set(RANKS) - {"core"}


def test_every_package_is_in_the_wheel():
    """pyproject lists packages by hand (cards/ is mapped in): a new sub-package must be listed too."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"
