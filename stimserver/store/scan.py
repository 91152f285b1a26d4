"""Search a job's committed output: a bounded scan that a client continues from ``next_offset``.

Patterns run on RE2 (google-re2), whose matching time is linear in the text, so no
pattern a user sends can make a scan hang; a substring query is an escaped,
case-insensitive RE2 pattern. Without ``field`` a pattern runs on the stored line (its
JSON text, escapes included) and whole chunks are searched at once, each hit checked
again on its own line; with ``field`` (a dotted path) every line is parsed and the
pattern runs on that value (text as it is, anything else as compact JSON).

One call reads at most ``max_bytes`` of data (always at least one line) and stops at a
line boundary; ``next_offset`` is the line to continue from, None once the end of the
committed lines is reached. Blocking: the server calls it in a worker thread.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from .snapshot import CHUNK, take

__all__ = ["BadPattern", "Match", "Pattern", "SearchResult", "compile_pattern", "search", "field_value", "MAX_PATTERN"]

MAX_PATTERN = 1000  # characters of a pattern or query
_MAX_MEM = 8 << 20  # RE2's memory budget for one compiled pattern


class BadPattern(ValueError):
    """A pattern RE2 cannot compile (or will not: too large, or with backreferences).

    ``param`` names the one that failed (``q`` or ``regex``) and ``text`` is it as written.
    """

    def __init__(self, reason: str, param: str = "", text: str = "") -> None:
        super().__init__(reason)
        self.param, self.text = param, text


@dataclass
class Match:
    line: int
    raw: bytes  # the stored line, without its newline


@dataclass
class SearchResult:
    matches: list[Match] = field(default_factory=list)
    next_offset: int | None = None
    scanned_lines: int = 0
    scanned_bytes: int = 0
    lines: int = 0  # committed lines when the scan began


@dataclass
class Pattern:
    """One user pattern compiled twice: for stored lines (no match crosses a newline, ``^``/``$`` at
    line ends) and for a field's value (as written)."""

    lines: Any
    value: Any
    text: str
    also: Pattern | None = None  # a second pattern the same line (or value) must match too (q and regex both)


def _compile(text: str, literal: bool, line_mode: bool) -> Any:
    options = re2.Options()
    options.max_mem = _MAX_MEM
    options.log_errors = False
    if literal:
        options.case_sensitive = False
        options.literal = True
    elif line_mode:
        text = "(?m)" + text  # ^ and $ at each line's start and end
    if line_mode:
        options.never_nl = True
    try:
        return re2.compile(text, options)
    except re2.error as e:
        reason = e.args[0] if e.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise BadPattern(str(reason) or "invalid pattern") from None


def compile_pattern(query: str | None, regex: str | None) -> Pattern:
    """A substring ``query`` (case-insensitive), a ``regex`` (RE2 syntax), both (a line must match
    both), or neither (every line matches); BadPattern says why not."""
    if query is None and regex is None:
        return Pattern(_compile("^", False, True), _compile("", False, False), "")
    if query is not None and regex is not None:
        first = compile_pattern(query, None)
        first.also = compile_pattern(None, regex)
        return first
    param, text = ("regex", regex) if regex is not None else ("q", query or "")
    if text == "":
        raise BadPattern("must not be empty", param, text)
    if len(text) > MAX_PATTERN:
        raise BadPattern(f"is longer than {MAX_PATTERN} characters", param, text)
    literal = regex is None
    try:
        value = _compile(text, literal, False)  # first: its errors quote the pattern as the user wrote it
        return Pattern(_compile(text, literal, True), value, text)
    except BadPattern as e:
        raise BadPattern(str(e), param, text) from None


def field_value(row: object, path: tuple[str, ...]) -> bytes | None:
    """The value at ``path`` in ``row`` as UTF-8 text (JSON for non-strings); None if absent."""
    value: Any = row
    for part in path:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def _line_bounds(buf: bytes, pos: int) -> tuple[int, int]:
    start = buf.rfind(b"\n", 0, pos) + 1
    end = buf.find(b"\n", pos)
    return start, (len(buf) if end == -1 else end)


def search(job_dir: Path, pattern: Pattern, path: tuple[str, ...] | None, offset: int, limit: int,
           max_bytes: int) -> SearchResult:
    """Matches of ``pattern`` from line ``offset`` on: at most ``limit`` of them and ``max_bytes`` read."""
    snap = take(job_dir)
    if snap is None:
        return SearchResult()
    with snap:
        result = SearchResult(lines=snap.lines)
        if offset >= snap.lines:
            return result
        pos, end = snap.span(offset, snap.lines)
        budget_end = min(end, pos + max(max_bytes, 1))
        line_no, tail, read_pos = offset, b"", pos
        while read_pos < end:
            room = budget_end - read_pos
            # within the budget read up to it; past it only to finish the line under way
            chunk = os.pread(snap.data_fd, min(CHUNK, room) if room > 0 else CHUNK, read_pos)
            if not chunk:
                break  # the output was cut under us: stop at what was read
            buf_start = read_pos - len(tail)
            read_pos += len(chunk)
            buf = tail + chunk
            over = read_pos >= budget_end
            # past the budget: lines up to the one holding its last byte, no more
            cut = buf.find(b"\n", max(budget_end - buf_start - 1, 0)) + 1 if over else buf.rfind(b"\n") + 1
            if not cut:
                tail = buf
                continue
            tail = buf[cut:]
            whole = buf[:cut]
            done = _scan_chunk(whole, pattern, path, line_no, limit, result)
            used = done if done is not None else len(whole)
            result.scanned_bytes += used
            line_no += whole.count(b"\n", 0, used)
            result.scanned_lines = line_no - offset
            if done is not None or over:
                break
        result.next_offset = line_no if line_no < snap.lines else None
        return result


def _scan_chunk(buf: bytes, pattern: Pattern, path: tuple[str, ...] | None, first: int, limit: int,
                result: SearchResult) -> int | None:
    """Add the matches of whole lines ``buf`` (line ``first`` first); the byte where it stopped at ``limit``."""
    if path is not None:
        line = first
        start = 0
        while start < len(buf):
            nl = buf.index(b"\n", start)
            raw = buf[start:nl]
            value = field_value(orjson.loads(raw), path)
            if value is not None and pattern.value.search(value) is not None and (
                    pattern.also is None or pattern.also.value.search(value) is not None):
                result.matches.append(Match(line, raw))
                if len(result.matches) >= limit:
                    return nl + 1
            line += 1
            start = nl + 1
        return None
    counted, line = 0, first
    pos = 0
    while pos < len(buf):
        hit = pattern.lines.search(buf, pos)
        if hit is None:
            return None
        ls, le = _line_bounds(buf, hit.start())  # never_nl: the match lies inside this one line
        if ls >= len(buf):
            return None  # only the (empty) position after the last newline
        line += buf.count(b"\n", counted, ls)
        counted = ls
        if pattern.also is not None and pattern.also.lines.search(buf, ls, le) is None:
            pos = le + 1
            continue
        result.matches.append(Match(line, buf[ls:le]))
        if len(result.matches) >= limit:
            return le + 1
        pos = le + 1
    return None
