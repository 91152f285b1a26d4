"""Prompts (API.md §6): message lists, checked here and stored verbatim.

A message needs a string ``role``; ``content`` may be a string, a list of objects or
null; any other key (``tool_calls``, ``name``, ...) is kept as sent. ``messages: []``
is a valid prompt (API.md asks for a list of messages, not a non-empty one): its stim
lines hold just the question.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from .base import Answer, ApiModel, Name, NonBlank, json_type

__all__ = ["Message", "Tool", "PromptCreate", "PromptSet", "PromptBatch", "PromptResponse", "PromptList",
           "Messages"]


def _content(value: Any) -> Any:
    if isinstance(value, list):
        for j, part in enumerate(value):
            if not isinstance(part, dict):
                raise PydanticCustomError("type_error.dict", "must be an object, got {got}",
                                          {"got": json_type(part), "loc": (j,)})
    elif value is not None and not isinstance(value, str):
        raise PydanticCustomError("type_error", "must be a string, a list of objects or null, got {got}",
                                  {"got": json_type(value)})
    return value


Content = Annotated[Any, PlainValidator(_content), WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}, {"type": "null"}]})]


class Message(ApiModel):
    """A chat message, kept verbatim (extra keys such as tool_calls too)."""

    model_config = ConfigDict(extra="allow")

    role: NonBlank
    content: Content = None


Tool = Annotated[dict[str, Any], Field(description="an OpenAI-format tool/function definition")]
Messages = list[Message]


class PromptSet(ApiModel):
    """The deprecated ``PUT …/prompts/{name}`` body."""

    messages: Messages
    tools: list[Tool] | None = None


class PromptCreate(PromptSet):
    prompt_name: Name


class PromptBatch(ApiModel):
    # Each prompt is checked on its own, and a bad one goes in ``failed`` (a 200): so the
    # document describes a value rather than constraining it; only the mapping is checked here.
    prompts: Annotated[dict[str, Any], WithJsonSchema({"type": "object", "description": "prompt name → messages",
                                                       "additionalProperties": {
        "description": "a list of Message; a prompt that is not one is reported in failed"}})]


class PromptResponse(Answer):
    prompt_name: str
    messages: list[Message]
    tools: list[Tool] | None


class PromptList(Answer):
    prompts: list[str]
