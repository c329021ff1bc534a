"""The sections of a recipe (source, engine, tagging, output, card, hub, cost): pydantic models, extra='forbid'.

A field that names a kind (engine, http api, source, strategy, output format) takes any name of
that kind's registry (`builder.recipe.kinds`), so a registered plugin is valid at once; anything
else is a one-line error listing the choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, field_validator
from pydantic_core import PydanticCustomError, core_schema

from builder.recipe.kinds import AUTO_ENGINE, ENGINES, FORMATS, HTTP_APIS, SOURCES, STRATEGIES, Registry


@dataclass(frozen=True)
class OneOf:
    """Field marker: the value must be a name in `registry` (or one of `also`) when the recipe is validated."""

    registry: Registry
    also: tuple[str, ...] = ()

    def check(self, value: str) -> str:
        if value not in self.also and value not in self.registry:
            raise PydanticCustomError("unknown_kind", self.registry.unknown(value, self.also))
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        out = handler(schema)
        out["enum"] = [*self.also, *self.registry.names()]
        return out


def _listed(registry: Registry) -> str:
    return "; ".join(f"{k.name}: {k.about}" for k in registry.kinds())


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceSpec(Strict):
    kind: Annotated[str, OneOf(SOURCES)] = Field(description="Reader. " + _listed(SOURCES) + ".")
    path: str = Field(description="Folder, dataset id / local dir, tar file(s) or brace pattern, COCO image folder, "
                                  "VOC year folder (VOCdevkit/VOC2007), NUS-WIDE or Open Images image folder, "
                                  "img2dataset output folder (local or s3://, gs://).")
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
    kind: Annotated[str, OneOf(ENGINES, (AUTO_ENGINE,))] = Field(
        AUTO_ENGINE, description="Backend (`tagllm engines` lists them). 'auto' picks sglang when installed "
                                 "with a GPU visible."
    )
    model: str | None = Field(None, description="Model id or local path (sglang, transformers); name for servers.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Backend arguments (sglang: tp_size, dp_size, mem_fraction_static, ...)."
    )
    servers: list[str] = Field(default_factory=list, description="http: server base URLs; load is spread over them.")
    api: Annotated[str, OneOf(HTTP_APIS)] = Field(
        "openai", description="http: protocol. " + _listed(HTTP_APIS) + "."
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
    strategy: Annotated[str, OneOf(STRATEGIES)] = Field("tagllm", description=_listed(STRATEGIES) + ".")
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
    dir: str = Field("out/dataset", description="Output folder (relative to the current directory), or an "
                     "object-store URL: s3://bucket/prefix, gs://bucket/prefix.")
    formats: list[Annotated[str, OneOf(FORMATS)]] = Field(
        default_factory=lambda: ["webdataset", "hf"], description="What to write. " + _listed(FORMATS) + "."
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
