"""Recipe: the YAML that fully describes a build. Pydantic models with extra='forbid'.

Relative paths in a recipe are resolved against the recipe file's folder, so a recipe and its
vocabulary travel together. `--set a.b=value` overrides any field before validation.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from builder.errors import UserError
from builder.recipe.concepts import ConceptSheet, load_concept_sheet
from builder.recipe.vocab import Vocabulary, format_validation_error, load_vocabulary, read_yaml, vocabulary_from_data


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceSpec(Strict):
    kind: Literal["folder", "hf", "webdataset", "coco", "voc", "nuswide", "openimages"] = Field(
        description="Reader: image folder, Hugging Face dataset, WebDataset tars, COCO-style instances JSON "
                    "(COCO, Objects365), PASCAL VOC, NUS-WIDE, or Open Images image-level labels."
    )
    path: str = Field(description="Folder, dataset id / local dir, tar file(s) or brace pattern, COCO image folder, "
                                  "VOC year folder (VOCdevkit/VOC2007), NUS-WIDE or Open Images image folder.")
    annotations: str | None = Field(
        None, description="COCO: the instances JSON file. NUS-WIDE: the folder with ImageList/, Groundtruth/ and "
                          "Concepts81.txt. Open Images: the human-verified image-level labels CSV.")
    split: str = Field("train", description="HF: split to read. VOC: ImageSets/Main/<split>.txt "
                                            "(train, val, trainval, test). NUS-WIDE: Train or Test.")
    classes: str | None = Field(None, description="Open Images: class descriptions CSV (MID -> display name); "
                                                  "labels of other classes are left out.")
    difficult: Literal["ignore", "positive", "negative"] = Field(
        "ignore", description="VOC: a class seen only on objects marked difficult is left out of the metrics "
                              "(ignore: the VOC benchmark), counted present, or counted absent.")
    path_tail: int | None = Field(
        None, ge=1, description="COCO: keep only the last N parts of file_name (Objects365 v2: 2, since its JSON "
                                "says images/v1/patchN/x.jpg while the download holds patchN/x.jpg).")
    config: str | None = Field(None, description="HF: dataset configuration name.")
    streaming: bool = Field(False, description="HF: stream instead of downloading the whole split.")
    from_disk: bool = Field(False, description="HF: path is a `save_to_disk` folder.")
    image_column: str = Field("image", description="HF/WebDataset: column or extension holding the image.")
    label_column: str | None = Field(None, description="HF/WebDataset: column with human labels (names or ids).")
    key_column: str | None = Field(None, description="HF: column with a stable key (default: row index).")
    label_map: dict[str, str | None] = Field(
        default_factory=dict,
        description="Source label name -> vocabulary label (null drops it). Unmapped names must match the vocabulary.",
    )
    metadata: str | None = Field(None, description="Folder: labels file (default metadata.jsonl/.csv beside images).")
    limit: int | None = Field(None, ge=1, description="Read at most this many items.")


class SimulationSpec(Strict):
    seed: int = Field(0, description="Seed of the noise model: the same seed gives the same labels.")
    miss_rate: float = Field(0.10, ge=0, le=1, description="Chance a present label is not proposed.")
    confusion_rate: float = Field(0.15, ge=0, le=1, description="Chance a wrong label of the group is proposed.")
    false_positive_rate: float = Field(0.02, ge=0, le=1, description="Chance of a label in an empty group.")
    flip_rate: float = Field(0.05, ge=0, le=1, description="Chance the yes/no check answers the wrong way.")
    verify_confusion_rate: float = Field(
        0.5, ge=0, le=1,
        description="Chance the yes/no check says yes to an absent label while a label of its group is present, "
                    "unless the question warns against that label (concept sheet confusable/excludes).",
    )
    latency: float = Field(0.0, ge=0, description="Seconds each simulated request takes.")
    crash_every: int = Field(0, ge=0, description="Die after this many requests (tests engine restarts); 0 = never.")
    allow_unlabeled: bool = Field(
        False, description="Run on a source without human labels: every answer is then empty (0 labels per "
                           "image). Only for pipeline tests; without it such a build is refused.",
    )


class EngineSpec(Strict):
    kind: Literal["auto", "sglang", "http", "transformers", "simulated"] = Field(
        "auto", description="Backend. 'auto' picks sglang when installed with a GPU visible."
    )
    model: str | None = Field(None, description="Model id or local path (sglang, transformers); name for servers.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Backend arguments (sglang: tp_size, dp_size, mem_fraction_static, ...)."
    )
    servers: list[str] = Field(default_factory=list, description="http: server base URLs; load is spread over them.")
    api: Literal["http-sglang", "openai", "vllm"] = Field(
        "openai", description="http: SGLang native /generate, or OpenAI-compatible chat (plain or vLLM grammar)."
    )
    api_key_env: str | None = Field(None, description="http: environment variable holding the API key.")
    concurrency: int = Field(64, ge=1, description="Requests in flight at once.")
    timeout: float = Field(120.0, gt=0, description="Seconds before one request counts as failed (then retried).")
    retries: int = Field(3, ge=0, description="Retries of a transient failure (timeouts, 5xx, 429, connection).")
    max_pixels: int = Field(
        1024 * 1024, ge=1024, description="Images above this many pixels are downscaled for the engine."
    )
    simulation: SimulationSpec = Field(default_factory=SimulationSpec, description="Simulated engine noise model.")


DEFAULT_SYSTEM = "You are a careful image annotator. Answer only about what is visible in the image."


class TaggingSpec(Strict):
    strategy: Literal["tagllm", "yes-no", "all-in-one", "open-ended"] = Field(
        "tagllm", description="tagllm = group-wise candidates + verification; the others are the paper's baselines."
    )
    system_prompt: str = Field(DEFAULT_SYSTEM, description="System message, shared by every request (prefix cache).")
    stage1_template: str | None = Field(None, description="Jinja file for the group question (default: built in).")
    stage2_template: str | None = Field(None, description="Jinja file for the yes/no check (default: built in).")
    concept_sheet: str | None = Field(None, description="Concept sheet YAML used by the verification prompt.")
    threshold: float = Field(0.5, ge=0, le=1, description="Score at or above which a verified label is kept.")
    thresholds_file: str | None = Field(
        None, description="YAML/JSON of per-label thresholds (from `tagllm eval --tune`)."
    )
    stage1_max_tokens: int = Field(256, ge=8, description="Token budget of a group answer.")
    ensemble: int = Field(1, ge=1, le=8, description="tagllm: stage-1 prompt variants per group, answers united.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature (0 = greedy).")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        return float(v)


class OutputSpec(Strict):
    dir: str = Field("out/dataset", description="Output folder (relative to the current directory).")
    formats: list[Literal["webdataset", "hf"]] = Field(
        default_factory=lambda: ["webdataset", "hf"], description="What to write."
    )
    samples_per_shard: int = Field(1000, ge=1, description="Records per shard; the shard is the unit of resume.")
    max_image_pixels: int = Field(100_000_000, ge=1, description="Larger images fail with 'too_large'.")
    decode_pixel_budget: int = Field(
        64_000_000, ge=1, description="Pixels decoded at once across all decode threads (about 4 bytes each), "
                                      "when images are decoded in threads (one core, or TAGLLM_DECODE=threads): "
                                      "peak image memory follows this, not the core count. Decode worker "
                                      "processes hold one image each.",
    )
    max_failed_fraction: float = Field(
        0.5, ge=0, le=1, description="`tagllm build` exits non-zero when more items than this fraction fail "
                                     "(or none is ok); the output stays resumable.",
    )
    include_failed: bool = Field(
        False, description="Also put failed items in the shards and HF data (with status and error); "
                           "the index always has them.",
    )

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one format is needed")
        return list(dict.fromkeys(v))


class CardSpec(Strict):
    pretty_name: str | None = Field(None, description="Title of the dataset card.")
    license: str = Field("other", description="License id of the published labels/dataset (Hub license id).")
    description: str = Field("", description="Free text shown at the top of the card.")
    extra: str = Field("", description="Markdown appended to the card.")
    source_datasets: list[str] = Field(default_factory=list, description="Hub ids or names of the source data.")
    tags: list[str] = Field(default_factory=list, description="Extra Hub tags.")


class HubSpec(Strict):
    repo_id: str | None = Field(None, description="Hub dataset repo to push to (user/name).")
    private: bool = Field(True, description="Create the repo as private.")


class CostSpec(Strict):
    gpu_price_per_hour: float | None = Field(
        None, ge=0, description="USD per GPU-hour you pay; no default (dollar figures only when set)."
    )
    human_price_per_image: float | None = Field(
        None, ge=0, description="USD per image for human multi-label annotation; no default (only when set)."
    )
    gpus: int | None = Field(None, ge=1, description="GPUs behind the engine; GPU-seconds = wall seconds x gpus. "
                             "Unset: the engine's own count (sglang tp x dp, http: one per server), else 1.")


class Recipe(Strict):
    name: str = Field(description="Dataset name (used for the card title and default repo name).")
    description: str = Field("", description="What this dataset is for.")
    source: SourceSpec = Field(description="Where the images (and any human labels) come from.")
    vocabulary: str | Vocabulary = Field(description="Vocabulary YAML file, or the vocabulary inline.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="Which MLLM backend answers.")
    tagging: TaggingSpec = Field(default_factory=TaggingSpec, description="Strategy, prompts and thresholds.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="What to write and where.")
    card: CardSpec = Field(default_factory=CardSpec, description="Dataset card content.")
    hub: HubSpec = Field(default_factory=HubSpec, description="Where `tagllm push` publishes.")
    cost: CostSpec = Field(default_factory=CostSpec, description="Prices for the cost report.")

    @model_validator(mode="after")
    def _name(self) -> Recipe:
        if not self.name.strip():
            raise ValueError("name is empty")
        return self


def read_thresholds_file(path: Path) -> Any:
    """A thresholds YAML/JSON: a `thresholds:` mapping (as `tagllm eval --tune` writes) or a bare one."""
    data = read_yaml(path)
    return data["thresholds"] if isinstance(data, dict) and "thresholds" in data else data


def check_thresholds(data: Any, vocab: Vocabulary, where: str) -> dict[str, float]:
    """Validate label -> threshold; errors name `where` and the label."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: thresholds: expected a mapping label -> threshold")
    unknown = sorted(set(data) - set(vocab.names))
    if unknown:
        raise UserError(f"{where}: thresholds: not labels of the vocabulary: {', '.join(map(str, unknown[:5]))}")
    for label, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise UserError(f"{where}: thresholds.{label}: must be a number in [0, 1]")
    return {label: float(value) for label, value in data.items()}


class LoadedRecipe:
    """A validated recipe plus the files it points to, resolved and loaded."""

    def __init__(self, recipe: Recipe, base_dir: Path, origin: str):
        self.recipe = recipe
        self.base_dir = base_dir
        self.origin = origin
        self.vocab = self._load_vocab()
        self.concepts = self._load_concepts()
        self.thresholds = self._load_thresholds()

    def path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def _load_vocab(self) -> Vocabulary:
        v = self.recipe.vocabulary
        if isinstance(v, Vocabulary):
            return v
        path = self.path(v)
        if not path.is_file():
            raise UserError(f"{self.origin}: vocabulary: file not found: {path}")
        return load_vocabulary(path)

    def _load_concepts(self) -> ConceptSheet:
        name = self.recipe.tagging.concept_sheet
        if not name:
            return ConceptSheet(vocabulary=self.vocab.name)
        path = self.path(name)
        if not path.is_file():
            raise UserError(f"{self.origin}: tagging.concept_sheet: file not found: {path}")
        sheet = load_concept_sheet(path)
        sheet.check_against(self.vocab, str(path))
        return sheet

    def _load_thresholds(self) -> dict[str, float]:
        """Per-label thresholds: concept sheet entries, then the thresholds file (which wins)."""
        out = {k: c.threshold for k, c in self.concepts.concepts.items() if c.threshold is not None}
        name = self.recipe.tagging.thresholds_file
        if name:
            path = self.path(name)
            out.update(check_thresholds(read_thresholds_file(path), self.vocab, str(path)))
        return out

    def threshold(self, label: str) -> float:
        return self.thresholds.get(label, self.recipe.tagging.threshold)

    def resolved(self) -> dict[str, Any]:
        """The recipe with the vocabulary inline and existing paths absolute (for identity, not for publishing).

        API keys are never in a recipe: only the name of the variable that holds one.
        """
        data = self.recipe.model_dump(mode="json")
        data["vocabulary"] = self.vocab.model_dump(mode="json")
        for section, key in PATH_FIELDS:
            p = self.path(data[section].get(key))
            if p is not None and p.exists():
                data[section][key] = str(p.resolve())
        return data

    def portable(self, folder: Path) -> dict[str, Any]:
        """The recipe as saved into a dataset `folder`: paths relative to that folder, URL credentials removed.

        Everything in it may be published: no absolute local paths, no user:password@ in server URLs.
        """
        data = self.resolved()
        for section, key in PATH_FIELDS:
            value = data[section].get(key)
            if value and Path(value).is_absolute():
                data[section][key] = os.path.relpath(value, Path(folder).resolve())
        data["engine"]["servers"] = [redact_url(u) for u in data["engine"]["servers"]]
        data["output"]["dir"] = f"out/{self.recipe.name}"
        return data

    def identity(self) -> dict[str, Any]:
        """Everything that changes the labels (not output location, card text, limit or concurrency)."""
        data = self.resolved()
        for k in ("output", "card", "hub", "cost"):
            data.pop(k, None)
        data["source"].pop("limit", None)
        data["tagging"].pop("concept_sheet", None)
        data["engine"].pop("concurrency", None)
        data["engine"].pop("servers", None)
        data["concepts"] = self.concepts.digest()
        data["thresholds"] = self.thresholds
        return data

    def digest(self) -> str:
        """Hash of `identity()`: a rerun into the same folder must have the same one."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


PATH_FIELDS = (("source", "path"), ("source", "annotations"), ("source", "classes"), ("tagging", "stage1_template"),
               ("tagging", "stage2_template"), ("tagging", "thresholds_file"))


def redact_url(url: str) -> str:
    """http://user:secret@host:port/x -> http://host:port/x (credentials never leave the machine)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two nested dicts (lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "(recipe)"]


def apply_overrides(data: dict[str, Any], overrides: list[str], origin: str = "--set") -> dict[str, Any]:
    """`a.b.c=value` pairs; values parse as YAML (so numbers, booleans and lists work)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{origin}: {item!r}: expected key.path=value")
        key, _, raw = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise UserError(f"{origin}: {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise UserError(f"{origin}: {key}: {part!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def recipe_from_data(data: Any, origin: str, base_dir: Path) -> LoadedRecipe:
    if not isinstance(data, dict):
        raise UserError(f"{origin}: a recipe must be a YAML mapping")
    if isinstance(data.get("vocabulary"), dict):
        vocabulary_from_data(data["vocabulary"], f"{origin}: vocabulary")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(origin, exc, Recipe)) from exc
    return LoadedRecipe(recipe, base_dir, origin)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> LoadedRecipe:
    path = Path(path)
    data = read_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            raise UserError(f"{path}: a recipe must be a YAML mapping")
        data = apply_overrides(data, overrides)
    return recipe_from_data(data, str(path), path.resolve().parent)


def recipe_schema() -> dict[str, Any]:
    return Recipe.model_json_schema()
