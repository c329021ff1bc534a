"""The kind registries are the one list of each kind: recipe, CLI choices and loaders all read them."""

from __future__ import annotations

import click
import pytest
import yaml

from builder.cli import main
from builder.engines.base import Engine
from builder.errors import UserError
from builder.method.base import Strategy
from builder.publish.writers.base import Writer
from builder.recipe.kinds import ENGINES, FORMATS, HTTP_APIS, SOURCES, STRATEGIES, Kind
from builder.recipe.model import load_recipe, recipe_schema
from builder.sources.base import Source


@pytest.fixture
def engines_registry(monkeypatch):
    """ENGINES with its entries copied, so a test may register kinds without leaving them behind."""
    monkeypatch.setattr(ENGINES, "_kinds", dict(ENGINES._kinds))
    return ENGINES


@pytest.mark.parametrize("registry,base", [(ENGINES, Engine), (SOURCES, Source), (STRATEGIES, Strategy),
                                           (FORMATS, Writer)], ids=["engines", "sources", "strategies", "formats"])
def test_every_registered_kind_loads_a_class_of_its_room(registry, base):
    for kind in registry.kinds():  # heavy needs are imported when the backend starts, not with its module
        assert issubclass(registry.load(kind.name), base), kind.name


def test_the_http_engine_speaks_exactly_the_registered_protocols():
    from builder.engines.http import APIS

    assert list(APIS) == HTTP_APIS.names()


def option_choices(command: click.Command, name: str) -> list[str]:
    (param,) = [p for p in command.params if p.name == name]
    return list(param.type.choices)


def test_cli_choices_are_the_registries():
    commands = main.commands
    engines = ["auto", *ENGINES.names()]
    for command in ("build", "calibrate", "reproduce"):
        assert option_choices(commands[command], "engine") == engines, command
    drafting = [commands["vocab"].commands["init"], commands["concepts"].commands["init"]]
    for command in (commands["build"], commands["calibrate"], *drafting):
        assert option_choices(command, "api") == HTTP_APIS.names(), command.name
        if command in drafting:
            assert option_choices(command, "engine") == [n for n in ENGINES.names() if n != "simulated"]
    assert option_choices(commands["calibrate"], "llm_api") == HTTP_APIS.names()
    assert option_choices(commands["build"], "strategy") == STRATEGIES.names()
    assert option_choices(commands["calibrate"], "strategy") == STRATEGIES.names()
    assert option_choices(commands["build"], "formats") == FORMATS.names()
    assert option_choices(commands["calibrate"], "llm_engine") == ENGINES.names()


def test_the_schema_offers_the_registered_names():
    defs = recipe_schema()["$defs"]
    assert defs["EngineSpec"]["properties"]["kind"]["enum"] == ["auto", *ENGINES.names()]
    assert defs["EngineSpec"]["properties"]["api"]["enum"] == HTTP_APIS.names()
    assert defs["SourceSpec"]["properties"]["kind"]["enum"] == SOURCES.names()
    assert defs["TaggingSpec"]["properties"]["strategy"]["enum"] == STRATEGIES.names()
    assert defs["OutputSpec"]["properties"]["formats"]["items"]["enum"] == FORMATS.names()


def test_a_registered_engine_is_a_valid_recipe_kind_and_is_built(engines_registry, write_recipe):
    from builder.engines.registry import engine_from_spec, register
    from builder.engines.simulated import SimulatedEngine

    path = write_recipe(engine={"kind": "echo"})
    with pytest.raises(UserError, match="engine.kind: unknown engine 'echo'; choose one of: auto, sglang, http"):
        load_recipe(path)
    register("echo", "builder.engines.simulated:SimulatedEngine", "a plugin for this test")
    loaded = load_recipe(path)
    assert loaded.recipe.engine.kind == "echo"
    assert isinstance(engine_from_spec(loaded.recipe.engine, loaded.vocab), SimulatedEngine)
    assert "echo" in yaml.safe_dump(recipe_schema())  # the schema reads the registry when asked


def test_a_kind_whose_module_is_missing_says_what_to_install(engines_registry):
    engines_registry.register(Kind("ghost", "an engine nobody installed", "tagllm_no_such_module:Engine",
                                   ("tagllm_no_such_module",), "ghost"))
    assert engines_registry.get("ghost").missing() == ["tagllm_no_such_module"]
    with pytest.raises(UserError, match=r"engine 'ghost' is not available .*pip install -e '\.\[ghost\]'"):
        engines_registry.load("ghost")
    with pytest.raises(UserError, match="unknown engine 'nope'; choose one of: sglang, .*, ghost$"):
        engines_registry.get("nope")
