"""Targets (API.md §7): the create bodies, the overrides, and the effective config.

A target's effective config is its template's config (``"default"``: the table below)
with each override field that was sent (not null) replaced whole: ``generators`` and
``extra_kwargs`` are replaced, not merged. The deprecated inputs ``u``/``v`` become
``teacher_prompt``/``student_prompt`` here, once; a stored config has exactly the keys
of ``DEFAULT_TARGET_CONFIG``. ``TargetConfig`` parses a stored config again when a job
is planned, so the generator rules run on what is stored, not on a second copy of them.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .base import Answer, ApiModel, Name, NonBlank, PositiveInt, PromptName, StudentPromptName, Temperature, Text
from .generators import Generator, effective_model, template_files

__all__ = ["DEFAULT_TARGET_CONFIG", "RUN_SETTINGS", "DEFAULT_BASE_MODEL", "DEFAULT_TEMPLATE", "CONFIG_FIELDS",
           "ALIASES", "TargetOverrides", "TargetConfig", "TargetCreate", "TargetSet", "TargetBatch", "TargetResponse",
           "TargetList", "public_config", "effective_config", "prompt_refs", "missing_prompts", "config_problems"]

DEFAULT_TARGET_CONFIG: dict[str, Any] = {
    "teacher_prompt": None,
    "student_prompt": None,
    "generators": [],
    "model_name": None,
    "num_traj_per_stimulus": 1,
    "max_concurrency": 10,
    "temperature": 1.0,
    "max_tokens": None,
    "extra_kwargs": {},
    "batch": False,
    "max_cost_usd": None,
}
RUN_SETTINGS = ("batch", "max_cost_usd")
"""Fields that say how a target's jobs run, not what they produce: unlike the rest they may
change on an existing target (a create with a config that differs only in them updates it)."""
DEFAULT_BASE_MODEL = "Qwen/Qwen3-32B"
DEFAULT_TEMPLATE = "default"  # the built-in template; no target may take this name
CONFIG_FIELDS = tuple(DEFAULT_TARGET_CONFIG)
ALIASES = {"u": "teacher_prompt", "v": "student_prompt"}
_DEPRECATED: dict[str, Any] = {"deprecated": True}
Cost = Annotated[float, Field(ge=0.0, le=1e9)]


class TargetOverrides(ApiModel):
    """Fields replacing the template's; null or absent: keep the template's."""

    teacher_prompt: PromptName | None = Field(None, description="prompt name: the unconditioned stimulus (u)")
    student_prompt: StudentPromptName | None = Field(None, description="prompt name: the conditioned stimulus (v); "
                                                                       "'' for none")
    generators: list[Generator] | None = None
    model_name: Text | None = None
    num_traj_per_stimulus: PositiveInt | None = None
    max_concurrency: PositiveInt | None = None
    temperature: Temperature | None = None
    max_tokens: PositiveInt | None = None
    extra_kwargs: dict[str, Any] | None = None
    batch: bool | None = Field(None, description="send rollout requests through the provider's batch API "
                                                "(half price, results within 24 h); docs/cost.md")
    max_cost_usd: Cost | None = Field(None, description="stop the target's jobs before their cost (USD, by the "
                                                        "price table) would pass this; docs/cost.md")
    u: PromptName | None = Field(None, exclude=True, json_schema_extra=_DEPRECATED,
                                 description="old name of teacher_prompt")
    v: StudentPromptName | None = Field(None, exclude=True, json_schema_extra=_DEPRECATED,
                                        description="old name of student_prompt")

    @model_validator(mode="after")
    def _aliases_and_templates(self) -> TargetOverrides:
        for alias, name in ALIASES.items():  # the current name wins over the old one, as a header over user_id
            value = getattr(self, alias)
            if value is not None and getattr(self, name) is None:
                setattr(self, name, value)
        for i, clash in template_files(list(self.generators or []))[1]:
            raise PydanticCustomError("value_error.template", "{clash}",
                                      {"clash": clash, "loc": ("generators", i, "template_content")})
        return self

    def stored(self) -> dict[str, Any]:
        """The fields that were sent, as kept in the target record (generators normalised)."""
        out: dict[str, Any] = {}
        for name in CONFIG_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = [g.stored() for g in value] if name == "generators" else copy.deepcopy(value)
        return out


class TargetConfig(ApiModel):
    """A target's effective config: every field, always (a stored config, or the §7 response)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    teacher_prompt: PromptName | None = None
    student_prompt: StudentPromptName | None = None
    generators: list[Generator] = Field(default_factory=list)
    model_name: Text | None = None
    num_traj_per_stimulus: PositiveInt = 1
    max_concurrency: PositiveInt = 10
    temperature: Temperature = 1.0
    max_tokens: PositiveInt | None = None
    extra_kwargs: dict[str, Any] = Field(default_factory=dict)
    batch: bool = False
    max_cost_usd: Cost | None = None


class TargetCreate(ApiModel):
    target_name: Name
    template: NonBlank = Field(description="'default' or a target of the same repo")
    overrides: TargetOverrides | None = None

    @field_validator("target_name")
    @classmethod
    def _not_the_default(cls, value: str) -> str:
        if value == DEFAULT_TEMPLATE:
            raise PydanticCustomError("value_error.name", "'{name}' names the built-in template; choose another "
                                      "target name", {"name": DEFAULT_TEMPLATE})
        return value


class TargetSet(ApiModel):
    """The deprecated ``PUT {T}`` body: the name comes from the path."""

    template: NonBlank
    overrides: TargetOverrides | None = None


class TargetBatch(ApiModel):
    # Items are parsed one by one, and a bad one goes in ``failed`` (a 200): so the document
    # describes an item rather than constraining it; only the list itself is checked here.
    targets: Annotated[list[Any], WithJsonSchema({"type": "array", "items": {
        "description": "a TargetCreate body; an item that is not one is reported in failed"}})]


class TargetResponse(Answer):
    target_name: str
    config: TargetConfig


class TargetList(Answer):
    targets: list[str]


def public_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Exactly the §7 response fields, defaults filling any a stored record lacks."""
    config = config or {}
    return {k: copy.deepcopy(config.get(k, default)) for k, default in DEFAULT_TARGET_CONFIG.items()}


def effective_config(template_config: dict[str, Any] | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The template's config with each given override field replaced whole."""
    config = public_config(template_config)
    config.update(copy.deepcopy(overrides))
    return config


def prompt_refs(config: dict[str, Any]) -> dict[str, str]:
    """Field → prompt name for the prompts a config names (an empty student prompt names none)."""
    return {f: config[f] for f in ("teacher_prompt", "student_prompt") if config.get(f)}


def missing_prompts(config: dict[str, Any], exists: Callable[[str], bool]) -> dict[str, str]:
    """Field → name of each prompt ``config`` names that ``exists`` does not find.

    The rule creation applies (a 422) and a job plan applies again (a 400): prompts of a
    target cannot be deleted through the API, but a record may be older or edited by hand.
    """
    return {field: name for field, name in prompt_refs(config).items() if not exists(name)}


def config_problems(config: TargetConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """(location, message) of what makes ``config`` unrunnable beyond its fields' own rules.

    Checked at creation and again when a job is planned: an LLM generator needs a model.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, gen in enumerate(config.generators):
        try:
            effective_model(gen, config.model_name)
        except ValueError as e:
            problems.append((("generators", i, "model"), str(e)))
    return problems

