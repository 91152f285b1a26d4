"""A JSON response whose status line and headers are written in one piece (issue 13).

``web.Response`` prepares every answer through a chain of a dozen coroutines (headers,
keep-alive, compression, chunking, signals, the header serialiser, the writer's
coalescing); for a page of complete output that was about a sixth of a request's
whole cost in aiohttp. ``FastJsonResponse`` is a ``web.Response`` that, in the plain
case — a body of bytes, no cookies, compression or chunking, no ``on_response_prepare``
handlers, a method and status that carry a body, and only headers of its own kind —
formats the same head aiohttp would (status line, its headers, ``Content-Length``,
``Date``, ``Server``, and ``Connection`` exactly when aiohttp adds it) and writes head and
body with one ``write_eof`` of the stream writer. In every other case it is an ordinary
``web.Response``, so it never answers what aiohttp would not.
"""
from __future__ import annotations

import re
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.web_response import MAX_SYNC_CHUNK_SIZE
from multidict import CIMultiDict

__all__ = ["FastJsonResponse"]

# What aiohttp's header serialiser refuses (CR, LF and the other controls but tab).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_OWN = frozenset({"content-length", "date", "server", "connection", "transfer-encoding", "content-encoding"})
_USUAL = frozenset({"Content-Type", "X-Request-Id"})  # names known to be neither of the above
_SERVER = f"Server: {SERVER_SOFTWARE}\r\n"


class FastJsonResponse(web.Response):
    """``web.Response(body=..., content_type="application/json")`` with the head made in one step."""

    def __init__(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._head: bytes | None = None
        if type(body) is not bytes or (headers and any(k.lower() == "content-type" for k in headers)):
            super().__init__(body=body, status=status, content_type="application/json", headers=headers)
            return
        # What ``web.Response(body=bytes, content_type=...)`` sets, without its generic steps (the
        # text, charset and payload cases): a page makes one per request (issue 13).
        # ``tests/web/test_pagepath.py`` checks that the two objects agree attribute by attribute.
        real_headers: CIMultiDict[str] = CIMultiDict(headers) if headers else CIMultiDict()
        real_headers[hdrs.CONTENT_TYPE] = "application/json"
        web.StreamResponse.__init__(self, status=status, _real_headers=real_headers)
        self._body = body
        self._compressed_body = None
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is not None:
            return self._payload_writer
        head = self._plain_head(request)
        if head is None:
            return await super().prepare(request)
        self._head = head
        self._req = request
        self._payload_writer = writer = request._payload_writer
        return writer

    def _plain_head(self, request: web.BaseRequest) -> bytes | None:
        """The status line and headers aiohttp would send, or None when this is not the plain case."""
        body = self._body
        if (type(body) is not bytes or self._cookies or self._compression or self._chunked
                or must_be_empty_body(request.method, self.status) or _has_prepare_signals(request)):
            return None
        version = request.version
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        # The status line and the Connection header, by what decides them: made once each (issue 13).
        key = (version, self._status, self._reason, keep_alive)
        frame = _FRAMES.get(key)
        if frame is None:
            if len(_FRAMES) >= 256:  # a reason of the caller's own making could vary: stay bounded
                _FRAMES.clear()
            frame = _FRAMES[key] = _frame(version, self._status, self.reason, keep_alive)
        lines = [frame[0]]
        for name, value in self._headers.items():
            if name not in _USUAL and (name.lower() in _OWN or _FORBIDDEN.search(name)):
                return None  # let aiohttp decide (and refuse a header it would refuse)
            if not value.isprintable() and _FORBIDDEN.search(value):
                return None
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\nDate: {rfc822_formatted_time()}\r\n{frame[1]}")
        return "".join(lines).encode("utf-8", "surrogateescape")

    async def write_eof(self, data: bytes = b"") -> None:
        head = self._head
        if head is None or self._eof_sent:
            return await super().write_eof(data)
        writer = self._payload_writer
        assert writer is not None and isinstance(self._body, bytes)
        self._head = None
        await writer.write_eof(b"".join((head, self._body)))
        self._eof_sent = True
        self._req = None
        self._body_length = writer.output_size  # head included, as aiohttp counts it
        self._payload_writer = None


_FRAMES: dict[tuple[Any, ...], tuple[str, str]] = {}  # few: two versions, a handful of statuses


def _frame(version: Any, status: int, reason: str, keep_alive: bool) -> tuple[str, str]:
    """(status line, the head's end: Server, Connection when aiohttp adds it, the blank line)."""
    connection = ""
    if keep_alive:
        if version == HttpVersion10:
            connection = "Connection: keep-alive\r\n"
    elif version == HttpVersion11:
        connection = "Connection: close\r\n"
    return f"HTTP/{version.major}.{version.minor} {status} {reason}\r\n", f"{_SERVER}{connection}\r\n"


def _has_prepare_signals(request: Any) -> bool:
    match_info = getattr(request, "_match_info", None)
    if match_info is None:
        return False
    for app in match_info.apps:
        if app.on_response_prepare:
            return True
    return False
