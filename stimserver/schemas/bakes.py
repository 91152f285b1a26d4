"""Bakes (API.md §14): the config, its "default" template, the create bodies and the answers.

A bake is ``{bake_name, template, overrides}``. ``overrides`` is a ``BakeConfigBase``: every
field of the official client's type of that name, all optional, each object closed (an unknown
field anywhere is a 422 naming it, e.g. ``overrides.model.foo: unknown field 'foo'``). The
bake's config is its template's config (``"default"``: ``DEFAULT_BAKE_CONFIG``; else the merged
config of a bake of the same repo) with the overrides merged in by ``merge``: objects key by
key, at every depth; anything else, lists included (``datasets``, ``checkpoint``,
``data.sources``, ``optimizer.betas``, ``data.train_eval_split``), replaced whole. A field sent
as null counts as absent, so an override cannot reset a field to null.

Stored overrides are the parsed model dumped again (``BakeConfigBase.stored``): ``0`` for a
float field becomes ``0.0`` and a dataset's ``weight`` is always present, so the same request
gives the same config, and the same config compares equal as JSON.
"""
from __future__ import annotations

import copy
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from ..store.jobrecords import JobStatus
from ..store.paths import name_problem
from .base import Answer, ApiModel, Name, NonBlank, Text, integral

__all__ = ["DEFAULT_TEMPLATE", "DEFAULT_BAKE_CONFIG", "MAX_DATASETS", "MAX_EXPIRES_IN", "DEFAULT_EXPIRES_IN",
           "BakeConfigBase", "CheckpointConfig", "DataConfig", "DataSource", "DatasetItem", "DeepspeedConfig",
           "ZeroOptimization", "ModelConfig", "BakedAdapterConfig", "OptimizerConfig", "SchedulerConfig",
           "WandbConfig", "BakeCreate", "BakeSet", "BakeBatch", "BakeResponse", "BakeList", "BakeDownloadResponse",
           "RepoTreeBake", "RepoTreeResponse", "merge", "bake_config", "checkpoint_ref",
           "model_name", "parent_bake", "dataset_targets"]

DEFAULT_TEMPLATE = "default"  # the built-in template; no bake may take this name
MAX_DATASETS = 1000
MAX_EXPIRES_IN = 604_800  # a download link lives at most a week (API.md §14)
DEFAULT_EXPIRES_IN = 3600
MAX_SEED = 2**32 - 1  # numpy's seed range, which transformers' set_seed passes it to
_MAX_PATH = 1024

# Bread's expanded default (API.md §14) with stimserver's departures, each documented in docs/bakes.md:
# no DeepSpeed, a held-out tenth, no activation checkpointing, AdamW at 2e-4, and no datasets (a bake
# must name its own; a run refuses an empty list).
DEFAULT_BAKE_CONFIG: dict[str, Any] = {
    "type": "single_baker",
    "datasets": [],
    "total_trajectories": 3600,
    "epochs": 1,
    "micro_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "seed": 42,
    "model": {
        "baked_adapter_config": {"r": 32, "lora_alpha": 16, "lora_dropout": 0.0, "bias": "none",
                                 "target_modules": "all-linear"},
        "disable_activation_checkpoint": True,
    },
    "data": {
        "sources": [{"type": "bake_jsonl", "max_samples": -1}],
        "beta": 0.0,
        "temperature": 1.0,
        "max_length": 3000,
        "train_eval_split": [0.9, 0.1],
    },
    "optimizer": {"type": "adamw", "learning_rate": 2e-4, "weight_decay": 0.0, "betas": [0.9, 0.999]},
    "scheduler": {"type": "huggingface"},
    "deepspeed": {"zero_optimization": {"stage": 0}},
    "checkpoint": [{"save_end_of_training": True}],
    "train_log_iter_interval": 1,
    "eval_interval": 0,
}


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("value_error.any_str.min_length", "must not be empty")
    return value


PathText = Annotated[str, Field(max_length=_MAX_PATH, json_schema_extra={"minLength": 1, "pattern": r"\S"}),
                     AfterValidator(_not_blank)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# Integers by their bounds; constraints before the BeforeValidator, or pydantic writes them as "ge"/"le"
# into the JSON Schema. 3.0 is the integer 3 (``integral``), as everywhere.
_I31 = 2**31 - 1
Count = Annotated[int, Field(ge=1, le=_I31), BeforeValidator(integral)]
NonNegative = Annotated[int, Field(ge=0, le=_I31), BeforeValidator(integral)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), BeforeValidator(integral)]
MaxSamples = Annotated[int, Field(ge=-1, le=_I31), BeforeValidator(integral)]
Batch = Annotated[int, Field(ge=1, le=65_536), BeforeValidator(integral)]
Rank = Annotated[int, Field(ge=1, le=4096), BeforeValidator(integral)]
Epochs = Annotated[int, Field(ge=1, le=10_000), BeforeValidator(integral)]
Tokens = Annotated[int, Field(ge=1, le=1_048_576), BeforeValidator(integral)]
Workers = Annotated[int, Field(ge=0, le=256), BeforeValidator(integral)]
Processes = Annotated[int, Field(ge=1, le=1024), BeforeValidator(integral)]
Stage = Annotated[int, Field(ge=0, le=3), BeforeValidator(integral)]


class _Closed(ApiModel):
    """A part of the bake config: closed, strict, null-as-absent (``ApiModel``)."""


class DatasetItem(_Closed):
    """A target whose complete rollout the bake trains on, and its share of the mix."""

    target: Name = Field(description="a target of the same repo, with a complete rollout when the bake runs")
    weight: float = Field(1.0, gt=0.0, le=1_000_000.0, description="relative share of the mix (default 1)")


class DataSource(_Closed):
    type: Text | None = Field(None, description="source type, e.g. 'bake_jsonl'")
    name_or_path: PathText | None = None
    split: Text | None = None
    max_samples: MaxSamples | None = Field(None, description="-1: all")
    sample_ratio: Fraction | None = None
    sample_count: NonNegative | None = None
    sample_seed: Seed | None = None
    process: bool | None = None


def _split(value: list[float]) -> list[float]:
    train, held_out = value
    if not math.isclose(train + held_out, 1.0, abs_tol=1e-6) or train <= 0:
        raise PydanticCustomError("value_error.split", "must be [train, eval] fractions that add up to 1, with "
                                  "train above 0 (got {value})", {"value": value})
    return value


class DataConfig(_Closed):
    type: Text | None = None
    sources: Annotated[list[DataSource], Field(max_length=100)] | None = None
    eval_sources: Annotated[list[DataSource], Field(max_length=100)] | None = None
    beta: Fraction | None = Field(None, description="generalized JSD mix: 0 = forward KL(teacher ‖ student)")
    temperature: float | None = Field(None, gt=0.0, le=100.0, description="softmax temperature of both sides")
    max_length: Tokens | None = Field(None, description="tokens of a whole example")
    train_eval_split: Annotated[list[Fraction], Field(min_length=2, max_length=2), AfterValidator(_split)] | None \
        = Field(None, description="[train, eval] fractions of the stimuli, adding up to 1")
    seed: Seed | None = None
    cache_dir: PathText | None = None
    cache_fs_type: Literal["auto", "local", "shared"] | None = None
    dl_num_workers: Workers | None = None
    num_proc: Processes | None = None
    use_data_cache: bool | None = Field(None, json_schema_extra={"deprecated": True})


class BakedAdapterConfig(_Closed):
    """The LoRA adapter the bake trains (peft ``LoraConfig``)."""

    r: Rank | None = Field(None, description="LoRA rank")
    lora_alpha: Batch | None = None
    lora_dropout: float | None = Field(None, ge=0.0, lt=1.0)
    bias: Literal["none", "all", "lora_only"] | None = None
    target_modules: Text | None = Field(None, description="'all-linear', or module names separated by commas")


class ModelConfig(_Closed):
    type: Text | None = None
    parent_model_name: PathText | None = Field(
        None, description="the base model (default: the repo's base_model), or a checkpoint of a bake: "
                          "'user/repo/bake/step'")
    baked_adapter_config: BakedAdapterConfig | None = None
    dtype: Literal["auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"] | None = None
    save_name: Text | None = None
    attn_implementation: Text | None = Field(None, description="e.g. 'sdpa', 'eager', 'flash_attention_2'")
    disable_activation_checkpoint: bool | None = None
    peft_config: dict[str, Any] | None = None
    student_model_path: PathText | None = Field(None, description="a separate student model (distill baking)")


class OptimizerConfig(_Closed):
    type: Text | None = None
    learning_rate: float | None = Field(None, gt=0.0, le=10.0)
    weight_decay: float | None = Field(None, ge=0.0, le=10.0)
    betas: Annotated[list[Annotated[float, Field(ge=0.0, lt=1.0)]], Field(min_length=2, max_length=2)] | None = None


_LR_SCHEMA = {"nullable": True, "enum": [None], "deprecated": True,
              "description": "deprecated and refused: set optimizer.learning_rate"}


class SchedulerConfig(_Closed):
    type: Text | None = None
    lr: Annotated[float | None, WithJsonSchema(_LR_SCHEMA)] = None

    @field_validator("lr")
    @classmethod
    def _refused(cls, value: float | None) -> float | None:
        if value is not None:
            raise PydanticCustomError("value_error.deprecated", "is deprecated and refused: set "
                                      "optimizer.learning_rate instead")
        return value


class ZeroOptimization(_Closed):
    stage: Stage | None = Field(None, description="ZeRO stage; 0: no DeepSpeed")


class DeepspeedConfig(_Closed):
    zero_optimization: ZeroOptimization | None = None


class CheckpointConfig(_Closed):
    type: Text | None = None
    output_dir: PathText | None = None
    enabled: bool | None = None
    auto_resume: bool | None = None
    save_every_n_steps: NonNegative | None = Field(None, description="0: off")
    save_every_n_epochs: NonNegative | None = Field(None, description="0: off")
    save_end_of_training: bool | None = None


class WandbConfig(_Closed):
    enable: bool | None = None
    project: Text | None = None
    name: Text | None = None
    entity: Text | None = None


def _distinct_targets(items: list[DatasetItem]) -> list[DatasetItem]:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.target in seen:
            raise PydanticCustomError("value_error.duplicate", "target '{target}' is named twice; name it once "
                                      "(its weight sets its share)", {"target": item.target, "loc": (i, "target")})
        seen.add(item.target)
    return items


class BakeConfigBase(_Closed):
    """A bake's config fields, all optional (overrides), or a whole config (an answer)."""

    type: Text | None = Field(None, description="bake type, e.g. 'single_baker'")
    model_name: Text | None = None
    datasets: Annotated[list[DatasetItem], Field(max_length=MAX_DATASETS), AfterValidator(_distinct_targets)] | None \
        = Field(None, description="the targets to train on; each once")
    total_trajectories: Count | None = Field(
        None, description="trajectories to train on at most, drawn from the datasets by weight")
    epochs: Epochs | None = None
    micro_batch_size: Batch | None = None
    gradient_accumulation_steps: Batch | None = None
    seed: Seed | None = None
    model: ModelConfig | None = None
    data: DataConfig | None = None
    optimizer: OptimizerConfig | None = None
    scheduler: SchedulerConfig | None = None
    deepspeed: DeepspeedConfig | None = None
    checkpoint: Annotated[list[CheckpointConfig], Field(max_length=16)] | None = None
    wandb: WandbConfig | None = None
    train_log_iter_interval: Count | None = None
    eval_interval: NonNegative | None = Field(None, description="0: only before and after training")
    activation_checkpoint_cpu_offload: bool | None = None

    def stored(self) -> dict[str, Any]:
        """The fields that were sent, normalised (floats as floats, defaults filled in), as kept in a record."""
        return self.model_dump(exclude_none=True)


class BakeCreate(ApiModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "bake_name": "bake2", "template": "default", "overrides": {"datasets": [{"target": "geo"}]}}})

    bake_name: Name
    template: NonBlank = Field(description="'default' or a bake of the same repo")
    overrides: BakeConfigBase | None = None

    @field_validator("bake_name")
    @classmethod
    def _not_the_default(cls, value: str) -> str:
        if value == DEFAULT_TEMPLATE:
            raise PydanticCustomError("value_error.name", "'{name}' names the built-in template; choose another "
                                      "bake name", {"name": DEFAULT_TEMPLATE})
        return value


class BakeSet(ApiModel):
    """The deprecated ``PUT {B}`` body: the name comes from the path."""

    model_config = ConfigDict(json_schema_extra={"example": {"template": "bake1", "overrides": {"epochs": 2}}})

    template: NonBlank
    overrides: BakeConfigBase | None = None


class BakeBatch(ApiModel):
    # Items are parsed one by one, a bad one reported in ``failed`` (a 200), as for targets.
    model_config = ConfigDict(json_schema_extra={"example": {"bakes": [
        {"bake_name": "bake3", "template": "bake1", "overrides": {"seed": 7}}]}})

    bakes: Annotated[list[Any], WithJsonSchema({"type": "array", "items": {
        "description": "a BakeCreate body; an item that is not one is reported in failed"}})]


class BakeResponse(Answer):
    """A bake's state (the client's BakeResponse, plus what stimserver adds after ``progress_percent``)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    status: JobStatus
    config: BakeConfigBase | None = Field(None, description="the bake's merged config")
    error: str | None = Field(None, description="why the bake failed")
    job_id: int | None = None
    lines: int | None = Field(None, description="always null (bakes write no lines)")
    loss: dict[str, float] | None = Field(
        None, description="latest_loss, min_loss, max_loss over the logged training steps, and final_loss once "
                          "complete; null before the first logged step")
    model_name: list[str] | None = Field(
        None, description="'user/repo/bake/step' of each published checkpoint, newest first; null without any")
    progress_percent: float | None = Field(None, ge=0, le=100)
    checkpoints: list[int] = Field(description="published checkpoint steps, ascending")
    total_steps: int | None = Field(None, ge=0, description="optimizer steps the trainer planned")
    steps_done: int | None = Field(None, ge=0, description="optimizer steps done (the last logged or saved)")
    evaluation: dict[str, Any] | None = Field(
        None, description="the held-out evaluation at the end (eval.json: checkpoint, heldout, behaviour)")
    data: dict[str, Any] | None = Field(
        None, description="what the bake trains on: datasets (per target: rollout_job_id, trajectories, "
                          "skipped_failed, used) and the trainer's counts (train_examples, eval_examples, "
                          "skipped_too_long, truncated, train_tokens)")


class BakeList(Answer):
    bakes: list[str]


class BakeDownloadResponse(Answer):
    bake_name: str
    checkpoint: int = Field(ge=0)
    expires_in: int = Field(ge=1, le=MAX_EXPIRES_IN)
    url: str = Field(description="a signed link to the checkpoint's .tar.gz on this server; no key needed")


class RepoTreeBake(Answer):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    status: JobStatus
    config: dict[str, Any]
    checkpoints: list[int] | None = None
    model_name: list[str] | None = None


class RepoTreeResponse(Answer):
    base_model: str
    bakes: dict[str, RepoTreeBake]
    edges: list[list[str]] = Field(description="['bake', child, 'bake', parent] for each bake whose "
                                               "model.parent_model_name names a checkpoint of another bake here")


# -- the config ------------------------------------------------------------------------------------------------
def merge(template_config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``template_config`` with ``overrides`` merged in: objects key by key, anything else (lists too) replaced."""
    out = copy.deepcopy(template_config)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def bake_config(template_config: dict[str, Any] | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config of a bake made from a template's config (None: the default) and stored overrides."""
    return merge(DEFAULT_BAKE_CONFIG if template_config is None else template_config, overrides)


_CHECKPOINT_REF = re.compile(r"([^/]+)/([^/]+)/([^/]+)/([0-9]{1,12})")


def checkpoint_ref(name: object) -> tuple[str, str, str, int] | None:
    """(user, repo, bake, step) when ``name`` is 'user/repo/bake/step' of valid names, else None."""
    if not isinstance(name, str):
        return None
    found = _CHECKPOINT_REF.fullmatch(name)
    if found is None or any(name_problem(part) is not None for part in found.groups()[:3]):
        return None
    return found[1], found[2], found[3], int(found[4])


def model_name(user: str, repo: str, bake: str, step: int) -> str:
    return f"{user}/{repo}/{bake}/{step}"


def parent_bake(config: dict[str, Any] | None, user: str, repo: str) -> str | None:
    """The bake of the same user and repo whose checkpoint the config's model.parent_model_name names."""
    model = (config or {}).get("model")
    ref = checkpoint_ref(model.get("parent_model_name")) if isinstance(model, dict) else None
    if ref is None or ref[0] != user or ref[1] != repo:
        return None
    return ref[2]


def dataset_targets(config: dict[str, Any] | None) -> list[str]:
    """The target names of a config's datasets, in order."""
    items = (config or {}).get("datasets")
    if not isinstance(items, list):
        return []
    return [item["target"] for item in items if isinstance(item, dict) and isinstance(item.get("target"), str)]
