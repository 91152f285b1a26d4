"""The one adapter from pydantic's errors to the API's 422 shape (API.md §2).

``{"message": "where: msg; ...", "code": "VALIDATION_ERROR", "detail": [{"loc", "msg", "type"}]}``
with ``loc`` starting at ``body`` (batch items keep their index). Pydantic's error types
are mapped to the names clients have seen since the first version (``value_error.missing``,
``type_error.integer``, ...), its locations are cleaned of union tags, and a validator
that checks several fields at once says which field is wrong with ``ctx["loc"]``.

No HTTP here (the job planner uses it too): ``parse`` raises ``Invalid``, which
``jsonio.parse_body`` turns into the 422.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from pydantic_core import ErrorDetails

from .base import json_type
from .generators import GENERATOR_TYPES

__all__ = ["Detail", "Invalid", "parse", "details", "message", "problem"]

M = TypeVar("M", bound=BaseModel)
Loc = Sequence[str | int]
Detail = dict[str, Any]
GENERATOR_TAGS = frozenset(GENERATOR_TYPES)


def _got(value: Any) -> str:
    return str(value) if isinstance(value, float) else json_type(value)


def _limit(ctx: dict[str, Any], key: str) -> str:
    value = ctx.get(key)
    return f"{value:g}" if isinstance(value, float) else str(value)


# pydantic type → (legacy type, message built from the error)
_MAPPED: dict[str, tuple[str, Callable[[ErrorDetails, dict[str, Any]], str]]] = {
    "missing": ("value_error.missing", lambda e, c: "field required"),
    "extra_forbidden": ("value_error.extra", lambda e, c: f"unknown field '{e['loc'][-1]}'"),
    "int_type": ("type_error.integer", lambda e, c: f"must be an integer, got {_got(e['input'])}"),
    "float_type": ("type_error.float", lambda e, c: f"must be a number, got {json_type(e['input'])}"),
    "string_type": ("type_error.str", lambda e, c: f"must be a string, got {json_type(e['input'])}"),
    "bool_type": ("type_error.bool", lambda e, c: f"must be true or false, got {json_type(e['input'])}"),
    "list_type": ("type_error.list", lambda e, c: f"must be a list, got {json_type(e['input'])}"),
    "dict_type": ("type_error.dict", lambda e, c: f"must be an object, got {json_type(e['input'])}"),
    "model_type": ("type_error.object", lambda e, c: f"must be an object, got {json_type(e['input'])}"),
    "model_attributes_type": ("type_error.object", lambda e, c: f"must be an object, got {json_type(e['input'])}"),
    "greater_than_equal": ("value_error.number.not_ge",
                           lambda e, c: f"must be at least {_limit(c, 'ge')}, got {e['input']}"),
    "less_than_equal": ("value_error.number.not_le",
                        lambda e, c: f"must be at most {_limit(c, 'le')}, got {e['input']}"),
    "too_short": ("value_error.list.min_items", lambda e, c: f"must contain at least {c.get('min_length')} item(s)"),
    "string_too_long": ("value_error.any_str.max_length",
                        lambda e, c: f"must be at most {c.get('max_length')} characters"),
    "string_too_short": ("value_error.any_str.min_length", lambda e, c: "must not be empty"),
    "union_tag_not_found": ("value_error.missing", lambda e, c: "field required"),
    "union_tag_invalid": ("value_error.generator_type",
                          lambda e, c: f"unknown generator type {c.get('tag')!r}; one of: "
                                       f"{c.get('expected_tags', '').replace(chr(39), '')}"),
}


def _loc(error: ErrorDetails) -> list[str | int]:
    loc = list(error["loc"])
    # A tagged union puts the tag in the location (generators.0.oneshot_qs.numq): drop it.
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part in GENERATOR_TAGS and i >= 2 and isinstance(loc[i - 1], int) and loc[i - 2] == "generators":
            continue
        out.append(part)
    ctx = error.get("ctx") or {}
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        out.append(str(ctx.get("discriminator", "type")).strip("'"))
    out.extend(ctx.get("loc", ()))
    return out


def details(exc: PydanticError, prefix: Loc = ("body",)) -> list[Detail]:
    """Every problem of ``exc`` as a detail dict, located under ``prefix``."""
    out: list[Detail] = []
    for error in exc.errors(include_url=False):
        ctx = dict(error.get("ctx") or {})
        mapped = _MAPPED.get(error["type"])
        if mapped is None:
            type_, msg = error["type"], error["msg"]
        else:
            type_, msg = mapped[0], mapped[1](error, ctx)
        out.append({"loc": [*prefix, *_loc(error)], "msg": msg, "type": type_})
    return out


def problem(loc: Loc, msg: str, type_: str = "value_error") -> Detail:
    return {"loc": list(loc), "msg": msg, "type": type_}


def message(detail: list[Detail]) -> str:
    """'where: msg; where: msg' — ``where`` without the leading ``body``."""
    parts = []
    for d in detail:
        where = ".".join(str(p) for p in d["loc"][1:]) or str(d["loc"][0])
        parts.append(f"{where}: {d['msg']}")
    return "; ".join(parts)


class Invalid(ValueError):
    """Every problem of one value, as 422 details."""

    def __init__(self, detail: list[Detail]) -> None:
        super().__init__(message(detail))
        self.detail = detail
        self.message = message(detail)


def parse(model: type[M], value: Any, prefix: Loc = ("body",)) -> M:
    """``value`` as ``model``, or ``Invalid`` naming every problem it has."""
    try:
        return model.model_validate(value)
    except PydanticError as e:
        raise Invalid(details(e, prefix)) from None
