"""What every request model shares: JSON's rules, not Python's.

The official client sends unset options as ``null``, so a null field counts as absent.
JSON has one number type: ``3.0`` is the integer 3, but ``3.5``, ``"3"`` and ``true``
are not integers (models are strict, and only an integral float is turned into an int).
Unknown fields are refused. Errors raised here carry the legacy ``type`` strings
(``type_error.integer``, ``value_error.name``, ...) that clients already see; the
adapter in ``validation.py`` maps pydantic's own ones.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from ..store.paths import MAX_NAME, name_problem

__all__ = ["Answer", "ApiModel", "DatasetName", "MAX_INT", "JsonInt", "PositiveInt", "Temperature", "Text", "NonBlank",
           "Name", "PromptName", "StudentPromptName", "integral", "json_type", "NAME_PATTERN", "MAX_TEXT"]

# The rule of store.paths.name_problem as a pattern (no trailing '.'); 'batch' is refused too.
NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_-])?$"
MAX_TEXT = 256  # model, dataset and base_model names


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages such as 'must be a string, got number'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Answer(BaseModel):
    """A response shape: documented, never used to parse input (so not closed)."""


class ApiModel(BaseModel):
    """An input shape: strict, closed, and null-as-absent."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


def integral(value: Any) -> Any:
    """3.0 → 3: JSON has one number type (3.5 stays a float and is refused by a strict int)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("value_error.any_str.min_length", "must not be empty")
    return value


def _name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise PydanticCustomError("value_error.name", "{problem} (allowed: letters, digits, '.', '_', '-'; at most "
                                  "{max} characters; starting with a letter or digit, not ending with '.')",
                                  {"problem": problem, "max": MAX_NAME})
    return value


def _prompt_name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise PydanticCustomError("value_error.name", "is not a valid prompt name: it {problem}", {"problem": problem})
    return value


def _dataset_name(value: str) -> str:
    """The store's dataset rule (``Datasets.find``), checked when a target names one, not first at run time."""
    problem = name_problem(value)
    if problem is not None:
        raise PydanticCustomError("value_error.name", "is not a valid dataset name: it {problem}", {"problem": problem})
    return value


def _student_prompt_name(value: str) -> str:
    return value if value == "" else _prompt_name(value)


_NAME_SCHEMA = {"type": "string", "pattern": NAME_PATTERN, "maxLength": MAX_NAME,
                "description": "letters, digits, '.', '_', '-'; starts with a letter or digit, does not end with "
                               "'.'; not 'batch'"}

# Constraints go before the BeforeValidator, or pydantic writes them as "ge"/"le" into the JSON Schema.
# Every integer of a body is a signed 64-bit one: what the document's int64 promises and every answer
# that echoes it can serialise (JSON numbers beyond it arrive as floats and are refused here).
MAX_INT = 2**63 - 1
JsonInt = Annotated[int, Field(ge=-MAX_INT - 1, le=MAX_INT), BeforeValidator(integral)]
PositiveInt = Annotated[int, Field(ge=1, le=MAX_INT), BeforeValidator(integral)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
# "Not blank" in the document too: at least one character that is not white space (\S, as str.strip sees it).
_NOT_BLANK_SCHEMA = {"minLength": 1, "pattern": r"\S"}
NonBlank = Annotated[str, AfterValidator(_not_blank), Field(json_schema_extra=_NOT_BLANK_SCHEMA)]
Text = Annotated[str, Field(max_length=MAX_TEXT, json_schema_extra=_NOT_BLANK_SCHEMA), AfterValidator(_not_blank)]
Name = Annotated[str, AfterValidator(_name), WithJsonSchema(_NAME_SCHEMA)]
PromptName = Annotated[str, AfterValidator(_prompt_name), WithJsonSchema(_NAME_SCHEMA)]
DatasetName = Annotated[str, AfterValidator(_dataset_name), WithJsonSchema(_NAME_SCHEMA)]
StudentPromptName = Annotated[str, AfterValidator(_student_prompt_name), WithJsonSchema(
    {"anyOf": [_NAME_SCHEMA, {"type": "string", "enum": [""]}], "description": "a prompt name, or '' for none"})]
