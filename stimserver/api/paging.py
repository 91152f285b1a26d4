"""Query parameters for paging: checked, clamped by the settings, named in errors.

An absent parameter takes its default; one that is present but empty (``?limit=``) is a
422 like any other non-integer, so a client's bug is never silently read as "no limit".
"""
from __future__ import annotations

from collections.abc import Mapping

from .errors import ValidationError

__all__ = ["int_param", "page_params"]


def int_param(query: Mapping[str, str], name: str, default: int | None, lo: int,
              hi: int | None = None) -> int | None:
    """An integer query parameter in ``[lo, hi]``, ``default`` if absent; a 422 naming ``name`` otherwise."""
    raw = query.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.removeprefix("-").isdigit() and text.isascii()) or len(text) > 20:
        raise _bad(name, raw, "must be an integer", "type_error.integer")
    value = int(text)
    if value < lo:
        raise _bad(name, raw, f"must be at least {lo}", "value_error.number.not_ge")
    if hi is not None and value > hi:
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
