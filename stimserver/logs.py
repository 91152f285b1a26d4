"""Access logs as one JSON object per line, and the request id that ties them together.

The id comes from an incoming ``X-Request-Id`` (when it looks sane, e.g. set by nginx)
or is made here; it is echoed as a response header. Made ids are 16 hex characters: the
process id (6), an epoch (4, random at start, bumped when the counter wraps) and a
counter (6). No syscall per request, and no two live processes of ``serve --workers N``
can make the same id, since their pids differ; the prefix is remade after a fork.

Lines carry method, route template, status, duration, user and bytes — never a token or a
query string. ``remote`` is the real client: behind a trusted proxy (``proxy.py``) the
address it forwarded, with the proxy's own address in ``via``; ``pid`` tells the processes
apart. A request aiohttp's parser refused (see ``protocol.py``) is logged with ``error``
set to its code and null method, route and path: what it asked for is unknown, and its
bytes may hold a secret.

Lines are buffered: a line is written at once when nothing was written in the last
``FLUSH_SECONDS``, else within ``FLUSH_SECONDS`` (or when ``MAX_BUFFER_BYTES`` are waiting),
and on shutdown (``flush_access_log``). A crash loses at most the last second's lines.
Writes are whole lines of at most ``PIPE_BUF`` bytes together, so the lines of several
processes sharing one stdout pipe never interleave mid-line.
"""
from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import secrets
import select
import sys
import time
from collections.abc import Callable
from typing import IO

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .keys import CLIENT_ADDR, IDENTITY, REQUEST_ID

__all__ = ["request_id_of", "new_request_id", "JsonAccessLogger", "REQUEST_ERROR",
           "flush_access_log", "flush_on_cleanup"]

# The error code of a request aiohttp's parser refused; set by protocol.SafeRequestHandler.
REQUEST_ERROR = web.RequestKey("REQUEST_ERROR", str)
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
_COUNTER_LIMIT = 1 << 24  # six hex digits
_PID = os.getpid()  # remade after a fork


class _RequestIds:
    """Per-process prefix plus a counter: unique ids without a ``getrandom`` per request."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A fresh prefix for this process (at import and in a forked child)."""
        self._pid = os.getpid() % _COUNTER_LIMIT  # Linux pids are below 2**22
        self._epoch = secrets.randbelow(1 << 16)
        self._prefix = f"{self._pid:06x}{self._epoch:04x}"
        self._counter = itertools.count()

    def __call__(self) -> str:
        n = next(self._counter)
        if n >= _COUNTER_LIMIT:  # 16.7 M ids in this epoch: the next epoch, the counter from 0
            self._epoch = (self._epoch + 1) % (1 << 16)
            self._prefix = f"{self._pid:06x}{self._epoch:04x}"
            self._counter = itertools.count(1)
            n = 0
        return self._prefix + format(n, "06x")


new_request_id = _RequestIds()


def request_id_of(request: web.Request) -> str:
    """The request's id: a sane incoming ``X-Request-Id``, else a new one."""
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 64 and all(c in _ID_CHARS for c in given):
        return given
    return new_request_id()


class _LineBuffer:
    """Access-log lines waiting to be written; one per process, shared by every connection."""

    FLUSH_SECONDS = 1.0
    MAX_BUFFER_BYTES = 64 * 1024
    CHUNK_BYTES = select.PIPE_BUF  # one write() of at most this many bytes is atomic on a pipe

    def __init__(self, stream: Callable[[], IO[bytes]]) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._size = 0
        self._last_write = -float("inf")
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def add(self, line: bytes) -> None:
        self._lines.append(line)
        self._size += len(line)
        waited = time.monotonic() - self._last_write
        if waited >= self.FLUSH_SECONDS or self._size >= self.MAX_BUFFER_BYTES:
            self.flush()
        else:
            self._arm(self.FLUSH_SECONDS - waited)

    def _arm(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a test): nothing would flush later
            self.flush()
            return
        if self._timer is not None and self._timer_loop is loop and not self._timer.cancelled():
            return
        self._timer, self._timer_loop = loop.call_later(delay, self._on_timer), loop

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write every waiting line now, in whole-line chunks; a broken stream drops them."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines, self._lines, self._size = self._lines, [], 0
        self._last_write = time.monotonic()
        try:
            stream = self._stream()
            chunk: list[bytes] = []
            size = 0
            for line in lines:
                if chunk and size + len(line) > self.CHUNK_BYTES:
                    stream.write(b"".join(chunk))
                    stream.flush()
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            stream.write(b"".join(chunk))
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full log stream must not break serving

    def forget(self) -> None:
        """In a forked child: the parent owns (and writes) what was waiting at the fork."""
        self._lines, self._size = [], 0
        self._timer = self._timer_loop = None


def _route(request: web.BaseRequest) -> str | None:
    """The route template, or None for a request that never reached the router."""
    if request.get(REQUEST_ERROR) is not None:
        return None
    try:
        match_info = getattr(request, "match_info", None)
    except AssertionError:  # aiohttp asserts when the request was never routed
        return None
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else None


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access logger writing compact JSON lines to stdout (buffered, see the module doc)."""

    stream: IO[bytes] = sys.stdout.buffer

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        error = request.get(REQUEST_ERROR)
        ident = request.get(IDENTITY)
        client = request.get(CLIENT_ADDR)
        entry = {
            "ts": round(time.time(), 3),
            "request_id": request.get(REQUEST_ID),
            "remote": client or request.remote,
            "via": request.remote if client else None,
            "method": request.method if error is None else None,
            "route": _route(request),
            "path": request.path if error is None else None,
            "status": response.status,
            "duration_ms": round(time_ * 1000, 3),
            "bytes": response.body_length,
            "user": ident.user if ident is not None else None,
            "pid": _PID,
        }
        if error is not None:
            entry["error"] = error
        _buffer.add(orjson.dumps(entry) + b"\n")

    @property
    def enabled(self) -> bool:
        return True


_buffer = _LineBuffer(lambda: JsonAccessLogger.stream)

def flush_access_log() -> None:
    """Write the buffered access-log lines now (shutdown, exit, fork)."""
    _buffer.flush()


async def flush_on_cleanup(app: web.Application) -> None:
    """``app.on_cleanup`` hook: requests drained during shutdown get their lines written."""
    _buffer.flush()


def _after_fork() -> None:
    global _PID
    _PID = os.getpid()
    new_request_id.reset()
    _buffer.forget()


os.register_at_fork(before=flush_access_log, after_in_child=_after_fork)
atexit.register(flush_access_log)
