"""The kinds a recipe may name: engines, http protocols, sources, strategies, output formats.

Each is one registry, and the only list of its kind: the recipe validates against it, the CLI
offers its names as choices, and the room that implements a kind loads the class from it. An
entry names its class as 'module:Class', imported only when that kind is used, so heavy
dependencies stay lazy and this module imports nothing of the rooms above it. `Registry.register`
adds a kind at run time (a plugin); it is a valid recipe value from then on.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from builder.errors import UserError


@dataclass(frozen=True)
class Kind:
    """One kind: the name recipes use, what it is, what implements it and what it needs installed."""

    name: str
    about: str  # one line: what it is
    target: str | None = None  # "module:Class" implementing it; None for a plain option
    needs: tuple[str, ...] = ()  # modules it imports that a core install may lack
    extra: str | None = None  # the optional dependency group that installs them

    def missing(self) -> list[str]:
        """The needed modules not importable here (found without importing them)."""
        return [m for m in self.needs if importlib.util.find_spec(m) is None]

    def install_hint(self) -> str:
        if self.extra:
            return f"pip install -e '.[{self.extra}]' (from a checkout)"
        return "pip install " + " ".join(self.needs)


class Registry:
    """The kinds of one sort, in the order they were registered."""

    def __init__(self, what: str, kinds: Iterable[Kind]):
        self.what = what  # "engine", "source kind", ...: how errors name it
        self._kinds: dict[str, Kind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: Kind) -> None:
        self._kinds[kind.name] = kind

    def names(self) -> list[str]:
        return list(self._kinds)

    def kinds(self) -> list[Kind]:
        return list(self._kinds.values())

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def unknown(self, name: Any, extra: Iterable[str] = ()) -> str:
        """The one-line message for a name that is not registered."""
        return f"unknown {self.what} {name!r}; choose one of: {', '.join([*extra, *self._kinds])}"

    def get(self, name: str) -> Kind:
        if name not in self._kinds:
            raise UserError(self.unknown(name))
        return self._kinds[name]

    def load(self, name: str) -> Any:
        """The class implementing `name`, imported now; a missing dependency is one line saying what to install."""
        kind = self.get(name)
        if kind.target is None:
            raise UserError(f"{self.what} {name!r} has no implementation to load")
        module_name, _, attr = kind.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UserError(f"{self.what} {name!r} is not available ({exc}): {kind.install_hint()}") from exc
        return getattr(module, attr)


AUTO_ENGINE = "auto"  # a recipe value, not an engine: resolved to one of ENGINES before a run

ENGINES = Registry("engine", [
    Kind("sglang", "SGLang in this process, on a local CUDA GPU: the fastest path",
         "builder.engines.sglang_engine:SglangEngine", ("sglang", "torch"), "sglang"),
    Kind("http", "model servers over HTTP: SGLang /generate, vLLM or any OpenAI-compatible API",
         "builder.engines.http:HttpEngine", ("aiohttp",)),
    Kind("transformers", "Hugging Face transformers in this process (CPU or GPU; slow, for small runs)",
         "builder.engines.transformers_engine:TransformersEngine", ("transformers", "torch", "xgrammar"), "hf"),
    Kind("simulated", "SIMULATED: the source's human labels plus seeded noise, for tests and demos",
         "builder.engines.simulated:SimulatedEngine"),
])

HTTP_APIS = Registry("http api", [
    Kind("http-sglang", "SGLang's native /generate (ebnf grammar, token_ids_logprob)"),
    Kind("openai", "OpenAI-compatible /v1/chat/completions (SGLang, vLLM, hosted APIs)"),
    Kind("vllm", "vLLM's OpenAI-compatible chat with its structured_outputs grammar"),
])

SOURCES = Registry("source kind", [
    Kind("folder", "an image folder, labels in metadata.jsonl / .csv", "builder.sources.folder:FolderSource"),
    Kind("hf", "a Hugging Face dataset (Hub id, local dir or save_to_disk folder)", "builder.sources.hf:HFSource",
         ("datasets",)),
    Kind("webdataset", "WebDataset tar shards", "builder.sources.webdataset:WebDatasetSource", ("webdataset",)),
    Kind("img2dataset", "img2dataset's webdataset output: every url, failed downloads recorded too",
         "builder.sources.img2dataset:Img2DatasetSource", ("pyarrow",)),
    Kind("coco", "COCO-style instances JSON (COCO, Objects365)", "builder.sources.coco:CocoSource"),
    Kind("voc", "PASCAL VOC (VOCdevkit/VOC2007)", "builder.sources.voc:VocSource"),
    Kind("nuswide", "NUS-WIDE (ImageList, Groundtruth, Concepts81)", "builder.sources.nuswide:NusWideSource"),
    Kind("openimages", "Open Images human-verified image-level labels",
         "builder.sources.openimages:OpenImagesSource"),
])

STRATEGIES = Registry("strategy", [
    Kind("tagllm", "group-wise candidates, then concept-aligned yes/no verification",
         "builder.method.strategies:TagLLM"),
    Kind("yes-no", "baseline: one yes/no question per vocabulary label", "builder.method.strategies:YesNo"),
    Kind("all-in-one", "baseline: one constrained question listing the whole vocabulary",
         "builder.method.strategies:AllInOne"),
    Kind("open-ended", "baseline: a free list of objects, mapped to the vocabulary",
         "builder.method.strategies:OpenEnded"),
])

FORMATS = Registry("output format", [
    Kind("webdataset", "WebDataset tar shards (image, labels json)",
         "builder.publish.writers.webdataset:WebDatasetWriter", ("webdataset",)),
    Kind("hf", "Hugging Face dataset parquet files", "builder.publish.writers.hf:HFWriter", ("pyarrow",)),
])


def engine_choices() -> list[str]:
    """What `engine.kind` and `--engine` accept: 'auto' and every registered engine."""
    return [AUTO_ENGINE, *ENGINES.names()]


def model_engines() -> list[str]:
    """Engines whose answers come from a model: every one but the simulated (drafting text needs a model)."""
    return [name for name in ENGINES.names() if name != "simulated"]
