"""JSON in and out: orjson responses and checked request bodies."""
from __future__ import annotations

from typing import Any, Iterable

import orjson
from aiohttp import web

from .errors import BadRequest, PayloadTooLarge, ValidationError
from .keys import SETTINGS
from .store.paths import MAX_NAME, name_problem

__all__ = ["json_response", "raw_json_response", "read_json_object", "Problems", "object_fields", "type_name",
           "check_str", "check_int", "check_number", "check_bool", "check_name_field", "same_json"]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers=headers)


def raw_json_response(body: bytes, status: int = 200) -> web.Response:
    """A body that is JSON already (e.g. spliced from stored lines)."""
    return web.Response(body=body, status=status, content_type="application/json")


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
        raise ValidationError(
            "request body must be a JSON object",
            detail=[{"loc": ["body"], "msg": "must be a JSON object", "type": "type_error.object"}],
        )
    return value


def type_name(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages such as 'expected a string, got number'."""
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


class Problems:
    """Collects every bad field of one body, then raises a single 422 naming them all."""

    def __init__(self) -> None:
        self.detail: list[dict[str, Any]] = []

    def add(self, loc: list[str | int], msg: str, type_: str = "value_error") -> None:
        self.detail.append({"loc": list(loc), "msg": msg, "type": type_})

    def __bool__(self) -> bool:
        return bool(self.detail)

    def message(self) -> str:
        parts = []
        for d in self.detail:
            where = ".".join(str(p) for p in d["loc"][1:]) or str(d["loc"][0])
            parts.append(f"{where}: {d['msg']}")
        return "; ".join(parts)

    def raise_if_any(self) -> None:
        if self.detail:
            raise ValidationError(self.message(), detail=self.detail)


def object_fields(value: Any, loc: list[str | int], problems: Problems, *, required: Iterable[str] = (),
                  optional: Iterable[str] = ()) -> dict[str, Any] | None:
    """The non-null fields of a JSON object, after checking its field names.

    Unknown fields and missing required ones are recorded in ``problems``; a field
    sent as ``null`` counts as absent (the official client sends unset options as
    null). Returns None if ``value`` is not an object at all.
    """
    if not isinstance(value, dict):
        problems.add(loc, f"must be an object, got {type_name(value)}", "type_error.object")
        return None
    required = tuple(required)
    known = set(required) | set(optional)
    for key in value:
        if key not in known:
            problems.add([*loc, key], f"unknown field '{key}'; allowed: {', '.join(sorted(known))}",
                         "value_error.extra")
    present = {k: v for k, v in value.items() if k in known and v is not None}
    for key in required:
        if key not in present:
            problems.add([*loc, key], "field required", "value_error.missing")
    return present


# Typed checks of one JSON value. Each returns the value (normalised) or None after
# recording what is wrong with it in ``problems``.

def check_str(value: Any, loc: list[str | int], problems: Problems, *, allow_empty: bool = False,
              max_len: int | None = None) -> str | None:
    if not isinstance(value, str):
        problems.add(loc, f"must be a string, got {type_name(value)}", "type_error.str")
        return None
    if not allow_empty and not value.strip():
        problems.add(loc, "must not be empty", "value_error.any_str.min_length")
        return None
    if max_len is not None and len(value) > max_len:
        problems.add(loc, f"must be at most {max_len} characters", "value_error.any_str.max_length")
        return None
    return value


def check_int(value: Any, loc: list[str | int], problems: Problems, *, lo: int | None = None,
              hi: int | None = None) -> int | None:
    # JSON has one number type: 3.0 is accepted as 3, 3.5 is not an integer. Booleans are not numbers.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(loc, f"must be an integer, got {type_name(value) if not isinstance(value, float) else value}",
                     "type_error.integer")
        return None
    if lo is not None and value < lo:
        problems.add(loc, f"must be at least {lo}, got {value}", "value_error.number.not_ge")
        return None
    if hi is not None and value > hi:
        problems.add(loc, f"must be at most {hi}, got {value}", "value_error.number.not_le")
        return None
    return value


def check_number(value: Any, loc: list[str | int], problems: Problems, *, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.add(loc, f"must be a number, got {type_name(value)}", "type_error.float")
        return None
    if not lo <= value <= hi:
        problems.add(loc, f"must be between {lo:g} and {hi:g}, got {value}", "value_error.number.range")
        return None
    return float(value)


def check_bool(value: Any, loc: list[str | int], problems: Problems) -> bool | None:
    if not isinstance(value, bool):
        problems.add(loc, f"must be true or false, got {type_name(value)}", "type_error.bool")
        return None
    return value


def check_name_field(value: Any, loc: list[str | int], problems: Problems) -> str | None:
    """A resource name from a body (the rules of ``store.paths.check_name``)."""
    problem = name_problem(value)
    if problem is not None:
        problems.add(loc, f"{problem} (allowed: letters, digits, '.', '_', '-'; at most {MAX_NAME}; "
                     "starting with a letter or digit)", "value_error.name")
        return None
    return value


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: key order ignored, but 1, 1.0 and true differ (Python's == would not tell)."""
    option = orjson.OPT_SORT_KEYS
    return orjson.dumps(a, option=option) == orjson.dumps(b, option=option)
