"""Generators of a target's config (API.md §8): a union on ``type``, the one home of their rules.

Every type accepts every field; fields a type does not use are kept but ignored by the
runner. Required per type:

    hardcoded     questions (non-empty strings); numq optional, at most len(questions)
    from_dataset  dataset, numq
    oneshot_qs    numq; a model (its own or the target's model_name)
    persona       numq; a model
    custom        numq; a model; template_content or template_path

A template is checked by ``llm.templates.validate_template``: at creation on
``template_content`` (or on the stored file a ``template_path`` names), and again when a
job is planned, on the file read then. Content without a path gets a name derived from
its hash, so sending the same generator twice gives the same config (200, not 409).
The model rule is ``effective_model``, used at creation and at run time alike.
"""
from __future__ import annotations

import hashlib
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..llm.templates import MAX_TEMPLATE_BYTES, validate_template
from ..store.paths import MAX_NAME, TEMPLATE_DIR, name_problem, template_file_name
from .base import NAME_PATTERN, ApiModel, DatasetName, JsonInt, NonBlank, PositiveInt, Temperature, Text, integral

__all__ = ["GENERATOR_TYPES", "GENERATOR_FIELDS", "LLM_TYPES", "MAX_NUMQ", "MAX_TEMPLATE_BYTES", "Generator",
           "GeneratorBase", "HardcodedGenerator", "FromDatasetGenerator", "OneshotQsGenerator", "PersonaGenerator",
           "CustomGenerator", "effective_model", "template_files"]

GENERATOR_TYPES = ("oneshot_qs", "hardcoded", "persona", "from_dataset", "custom")
GENERATOR_FIELDS = ("type", "model", "numq", "temperature", "max_tokens", "dataset", "questions",
                    "template_path", "template_content", "seed", "rollout_with_conditioned")
LLM_TYPES = ("oneshot_qs", "persona", "custom")
MAX_NUMQ = 1_000_000

Numq = Annotated[int, Field(ge=1, le=MAX_NUMQ, description="how many questions"), BeforeValidator(integral)]
TemplateContent = Annotated[str, Field(description="a string.Template using ${numq} and ${prompt_u} (persona: also "
                                                   "${persona}); at most 1 MiB of UTF-8")]


def _error(field: str, type_: str, msg: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(type_, msg, {"loc": (field,), **ctx})


class GeneratorBase(ApiModel):
    """The fields every generator may carry; subclasses fix ``type`` and what is required."""

    renders: ClassVar[bool] = False              # does the runner fill in a template?
    template_names: ClassVar[tuple[str, ...]] = ()  # placeholders beyond ${numq} and ${prompt_u}

    type: str
    model: Text | None = None
    numq: Numq | None = None
    temperature: Temperature | None = None
    max_tokens: PositiveInt | None = None
    dataset: DatasetName | None = None
    questions: Annotated[list[NonBlank], Field(min_length=1)] | None = None
    template_path: str | None = Field(default=None, description="a file of the repo's templates/ folder",
                                      json_schema_extra={"pattern": f"^({TEMPLATE_DIR}/)?" + NAME_PATTERN[1:],
                                                         "maxLength": len(TEMPLATE_DIR) + 1 + MAX_NAME})
    template_content: TemplateContent | None = None
    seed: JsonInt | None = None
    rollout_with_conditioned: bool | None = None

    @field_validator("template_path")
    @classmethod
    def _template_path(cls, value: str) -> str:
        name = template_file_name(value)
        problem = name_problem(name)
        if problem is not None:
            raise PydanticCustomError("value_error.template_path", "must be a file name, optionally prefixed "
                                      "with '{dir}/': file name {problem}", {"dir": TEMPLATE_DIR, "problem": problem})
        return f"{TEMPLATE_DIR}/{name}"

    @field_validator("template_content")
    @classmethod
    def _template_content(cls, value: str) -> str:
        try:
            cls.check_template_text(value)
        except ValueError as e:
            raise PydanticCustomError("value_error.template", "{problem}", {"problem": str(e)}) from None
        return value

    @model_validator(mode="after")
    def _derived_template_path(self) -> GeneratorBase:
        if self.template_content is not None and self.template_path is None:
            digest = hashlib.sha256(self.template_content.encode()).hexdigest()[:16]
            self.template_path = f"{TEMPLATE_DIR}/tpl-{digest}.txt"
        return self

    @classmethod
    def check_template_text(cls, text: str) -> None:
        """The template rule for this type; ValueError says what is wrong."""
        validate_template(text, extra_names=cls.template_names, placeholders=cls.renders)

    def stored(self) -> dict[str, Any]:
        """As kept in a target's config: ``type`` first, fields sent as null left out."""
        data = self.model_dump(exclude_none=True)
        return {"type": self.type, **{k: data[k] for k in GENERATOR_FIELDS[1:] if k in data}}


class HardcodedGenerator(GeneratorBase):
    type: Literal["hardcoded"]
    questions: Annotated[list[NonBlank], Field(min_length=1)]

    @model_validator(mode="after")
    def _numq_fits(self) -> HardcodedGenerator:
        if self.numq is not None and self.numq > len(self.questions):
            raise _error("numq", "value_error.numq", "is {numq} but only {n} questions are given (stimserver never "
                         "repeats questions to pad the output)", numq=self.numq, n=len(self.questions))
        return self


class FromDatasetGenerator(GeneratorBase):
    type: Literal["from_dataset"]
    numq: Numq
    dataset: DatasetName


class OneshotQsGenerator(GeneratorBase):
    renders = True
    type: Literal["oneshot_qs"]
    numq: Numq


class PersonaGenerator(GeneratorBase):
    renders = True
    template_names = ("persona",)
    type: Literal["persona"]
    numq: Numq


class CustomGenerator(GeneratorBase):
    # The rule below, stated in the document too: template_path or template_content, not null.
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["template_path"], "properties": {"template_path": {"type": "string"}}},
        {"required": ["template_content"], "properties": {"template_content": {"type": "string"}}}]})
    renders = True
    type: Literal["custom"]
    numq: Numq

    @model_validator(mode="after")
    def _has_template(self) -> CustomGenerator:
        if self.template_path is None and self.template_content is None:
            raise _error("template_path", "value_error.missing",
                         "a custom generator needs template_path or template_content")
        return self


Generator = Annotated[
    OneshotQsGenerator | HardcodedGenerator | PersonaGenerator | FromDatasetGenerator | CustomGenerator,
    Field(discriminator="type"),
]


def effective_model(gen: GeneratorBase, model_name: str | None) -> str | None:
    """The model an LLM generator asks (its own, else the target's ``model_name``); None for others.

    Raises ValueError when an LLM generator has neither.
    """
    if gen.type not in LLM_TYPES:
        return None
    model = gen.model or model_name
    if model is None or not model.strip():
        raise ValueError("model is required for an LLM generator (e.g. 'claude-sonnet-4-5-20250929', or a model "
                         "your OpenAI-compatible server serves); the target's model_name is used if set")
    return model.strip()


def template_files(generators: list[GeneratorBase]) -> tuple[dict[str, str | None], list[tuple[int, str]]]:
    """File name → content (None: must exist already) of the templates ``generators`` use.

    Also returns (index, message) for a generator giving an earlier one's path other content.
    """
    files: dict[str, str | None] = {}
    clashes: list[tuple[int, str]] = []
    for i, g in enumerate(generators):
        if g.template_path is None:
            continue
        name = template_file_name(g.template_path)
        if g.template_content is None:
            files.setdefault(name, None)
        elif files.get(name) is None:
            files[name] = g.template_content
        elif files[name] != g.template_content:
            clashes.append((i, f"gives {g.template_path} another content than an earlier generator"))
    return files, clashes
