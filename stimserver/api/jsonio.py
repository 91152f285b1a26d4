"""JSON in and out: orjson responses, request bodies read and parsed with the schemas."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel

from ..schemas.base import json_type
from ..schemas.validation import Detail, Invalid, message, parse, problem
from .errors import BadRequest, PayloadTooLarge, ValidationError
from .fastresponse import FastJsonResponse
from .keys import SETTINGS

__all__ = ["json_response", "raw_json_response", "read_json_object", "parse_body", "unprocessable", "raise_422",
           "same_json"]

M = TypeVar("M", bound=BaseModel)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return FastJsonResponse(orjson.dumps(data), status=status, headers=headers)


def raw_json_response(body: bytes, status: int = 200) -> web.Response:
    """A body that is JSON already (e.g. spliced from stored lines)."""
    return FastJsonResponse(body, status=status)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx that says what is wrong with it."""
    max_size = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > max_size:
        raise PayloadTooLarge(f"request body is {request.content_length} bytes; the limit is {max_size}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body is larger than the limit of {max_size} bytes") from None
    if not raw.strip():
        raise BadRequest("request body is empty: send a JSON object")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise unprocessable([problem(["body"], f"must be a JSON object, got {json_type(value)}", "type_error.object")])
    return value


def parse_body(model: type[M], value: Any, prefix: Sequence[str | int] = ("body",)) -> M:
    """``value`` as ``model``, or the 422 naming every problem (schemas/validation.py's adapter)."""
    try:
        return parse(model, value, prefix)
    except Invalid as e:
        raise unprocessable(e.detail) from None


def unprocessable(detail: list[Detail]) -> ValidationError:
    """The 422 for problems found beyond a model's own rules (e.g. a prompt that does not exist)."""
    return ValidationError(message(detail), detail=detail)


def raise_422(detail: list[Detail]) -> None:
    """Raise ``unprocessable(detail)`` if there is any detail."""
    if detail:
        raise unprocessable(detail)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: key order ignored, but 1, 1.0 and true differ (Python's == would not tell)."""
    option = orjson.OPT_SORT_KEYS
    return orjson.dumps(a, option=option) == orjson.dumps(b, option=option)
