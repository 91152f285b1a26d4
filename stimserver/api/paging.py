"""Query parameters for paging: checked, clamped by the settings, named in errors.

An absent parameter takes its default; one that is present but empty (``?limit=``) is a
422 like any other non-integer, so a client's bug is never silently read as "no limit".
Every integer parameter of every route is read here, under one rule: at most
``MAX_QUERY_INT`` (a signed 64-bit integer, what JSON clients and the OpenAPI document's
``int64`` can hold), so no answer ever echoes a number it cannot serialise.
"""
from __future__ import annotations

from collections.abc import Mapping

from .errors import ValidationError

__all__ = ["MAX_QUERY_INT", "int_param", "page_params"]

MAX_QUERY_INT = 2**63 - 1


def int_param(query: Mapping[str, str], name: str, default: int | None, lo: int,
              hi: int | None = None) -> int | None:
    """An integer query parameter in ``[lo, hi]`` (``hi`` at most ``MAX_QUERY_INT``), ``default`` if absent;
    a 422 naming ``name`` otherwise."""
    raw = query.get(name)
    if raw is None:
        return default
    hi = MAX_QUERY_INT if hi is None else min(hi, MAX_QUERY_INT)
    text = raw.strip()
    digits = text.removeprefix("-")
    if not (digits.isdigit() and digits.isascii()):
        raise _bad(name, raw, "must be an integer", "type_error.integer")
    if len(digits.lstrip("0")) > len(str(MAX_QUERY_INT)):  # never int() of thousands of digits
        value = -(MAX_QUERY_INT + 2) if text.startswith("-") else MAX_QUERY_INT + 1
    else:
        value = int(text)
    if value < lo:
        raise _bad(name, raw, f"must be at least {lo}", "value_error.number.not_ge")
    if value > hi:
        raise _bad(name, raw, f"must be at most {hi}", "value_error.number.not_le")
    return value


def _bad(name: str, raw: str, msg: str, type_: str) -> ValidationError:
    shown = raw if len(raw) <= 40 else raw[:40] + "…"
    return ValidationError(f"query parameter {name} {msg} (got {shown!r})",
                           detail=[{"loc": ["query", name], "msg": msg, "type": type_}])


def page_params(query: Mapping[str, str], default_limit: int, max_limit: int) -> tuple[int, int]:
    """``(offset, limit)`` of a page request: offset from 0, limit in ``[1, max_limit]``."""
    offset = int_param(query, "offset", 0, 0)
    limit = int_param(query, "limit", default_limit, 1, max_limit)
    assert offset is not None and limit is not None
    return offset, limit
