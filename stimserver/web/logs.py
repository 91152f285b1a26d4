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
A request's entry waits as a tuple of plain values and becomes its line when the buffer
is written: many lines formatted in one loop cost far less than one formatted between
pages (issue 13).
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
from typing import IO, Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..api.keys import CLIENT_ADDR, IDENTITY, REQUEST_ID

__all__ = ["request_state", "request_id_of", "new_request_id", "JsonAccessLogger", "REQUEST_ERROR", "PAGE_ROUTE",
           "flush_access_log", "flush_on_cleanup"]

# The error code of a request aiohttp's parser refused; set by protocol.SafeRequestHandler.
REQUEST_ERROR = web.RequestKey("REQUEST_ERROR", str)
# (route template, path) of a page answered before the router (fastpage.py): what the log would look up.
PAGE_ROUTE = web.RequestKey("PAGE_ROUTE", tuple)
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
    # ~50 entries: formatting them holds the loop ~0.2 ms; 200 held it ~0.65 ms, which every page in
    # flight waited out (p99), for no fewer writes (they are PIPE_BUF chunks either way).
    MAX_BUFFER_BYTES = 16 * 1024
    CHUNK_BYTES = select.PIPE_BUF  # one write() of at most this many bytes is atomic on a pipe

    ENTRY_BYTES = 320  # what a request's entry counts towards MAX_BUFFER_BYTES (a line is about that long)

    def __init__(self, stream: Callable[[], IO[bytes]]) -> None:
        self._stream = stream
        self._lines: list[bytes | tuple[Any, ...]] = []
        self._size = 0
        self._last_write = -float("inf")
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def add(self, line: bytes | tuple[Any, ...]) -> None:
        """A line, or a request's entry (``JsonAccessLogger.log``), which becomes its line when written."""
        self._lines.append(line)
        self._size += len(line) if type(line) is bytes else self.ENTRY_BYTES
        # A live timer writes this line within FLUSH_SECONDS: then adding is an append (issue 13).
        if self._size >= self.MAX_BUFFER_BYTES:
            self.flush()
        elif self._timer_loop is None or self._timer_loop.is_closed():
            waited = time.monotonic() - self._last_write
            if waited >= self.FLUSH_SECONDS:
                self.flush()
            else:
                self._arm(self.FLUSH_SECONDS - waited)

    def _arm(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a test): nothing would flush later
            self.flush()
            return
        self._timer, self._timer_loop = loop.call_later(delay, self._on_timer), loop

    def _on_timer(self) -> None:
        self._timer = self._timer_loop = None
        self.flush()

    def flush(self) -> None:
        """Write every waiting line now, in whole-line chunks; a broken stream drops them."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_loop = None
        if not self._lines:
            return
        lines, self._lines, self._size = self._lines, [], 0
        self._last_write = time.monotonic()
        try:
            stream = self._stream()
            chunk: list[bytes] = []
            size = 0
            made = [item if type(item) is bytes else _line(*item) for item in lines]
            for line in made:
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


_dumps = orjson.dumps
_JSON_STRS: dict[str | None, str] = {None: "null"}
_JSON_STRS_SIZE = 4096


def _json_str(value: str | None) -> str:
    """``value`` as JSON (a string or null), remembered: routes, methods, users and addresses repeat."""
    out = _JSON_STRS.get(value)
    if out is None:
        out = _dumps(value).decode()
        if len(_JSON_STRS) >= _JSON_STRS_SIZE:
            _JSON_STRS.clear()
            _JSON_STRS[None] = "null"
        _JSON_STRS[value] = out
    return out


def _route(request: web.BaseRequest) -> str | None:
    """The route template, or None for a request that never reached the router.

    ``log`` asks only when the request has no ``REQUEST_ERROR`` (aiohttp's parser took it).
    """
    try:
        match_info = getattr(request, "match_info", None)
    except AssertionError:  # aiohttp asserts when the request was never routed
        return None
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else None


def request_state(request: web.BaseRequest) -> dict[Any, Any] | None:
    """The dict behind ``request[key]``, or None if aiohttp no longer has it (``tests/web/test_logs.py`` pins it).

    ``request.get`` of an absent key raises and catches a KeyError inside ``Mapping.get``, and
    ``request[key] = value`` checks the key's type on every call: on the page path, three and
    four times a request (issue 13).
    """
    state = getattr(request, "_state", None)
    return state if isinstance(state, dict) else None


_MIDDLES: dict[tuple[str | None, ...], tuple[str, str]] = {}  # see _line; cleared after a fork (the pid)
_MIDDLES_SIZE = 4096


def _line(ts: float, rid: str | None, client: str | None, peer: str | None, method: str | None,
          route: str | None, path: str | None, status: int, duration: float, nbytes: int,
          user: str | None, error: str | None) -> bytes:
    """One access-log line. One f-string, not a dict through orjson: a third of the cost. The keys
    and their order are the same as ever; strings go through orjson (escaping). The parts that
    repeat from request to request (client, method, route, user) are made once per combination."""
    key = (client, peer, method, route, user)
    middle = _MIDDLES.get(key)
    if middle is None:
        remote = client or peer
        middle = (f'"remote":{_json_str(remote)},"via":{_json_str(peer) if client else "null"},'
                  f'"method":{_json_str(method)},"route":{_json_str(route)},',
                  f'"user":{_json_str(user)},"pid":{_PID}')
        if len(_MIDDLES) >= _MIDDLES_SIZE:
            _MIDDLES.clear()
        _MIDDLES[key] = middle
    tail = "}\n" if error is None else f',"error":{_json_str(error)}}}\n'
    return (f'{{"ts":{ts:.3f},"request_id":{"null" if rid is None else _dumps(rid).decode()},{middle[0]}'
            f'"path":{"null" if path is None else _dumps(path).decode()},"status":{status:d},'
            f'"duration_ms":{duration * 1000:.3f},"bytes":{nbytes:d},{middle[1]}{tail}').encode()


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access logger writing compact JSON lines to stdout (buffered, see the module doc)."""

    stream: IO[bytes] = sys.stdout.buffer

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        # The request's entry is kept as plain values and made a line when the buffer is written:
        # formatting a thousand lines in one loop costs far less than one at a time between
        # requests, each of which has pushed a page through the caches since (issue 13).
        state = request_state(request)
        if state is None:
            state = dict(request)
        error = state.get(REQUEST_ERROR)
        ident = state.get(IDENTITY)
        method: str | None = None
        route: str | None = None
        path: str | None = None
        page = state.get(PAGE_ROUTE)
        if page is not None:  # set by fastpage: the route template and path it matched
            method, (route, path) = "GET", page
        elif error is None:
            method, route, path = request.method, _route(request), request.path
        _buffer.add((time.time(), state.get(REQUEST_ID), state.get(CLIENT_ADDR), request.remote, method, route,
                     path, response.status, time_, response.body_length, None if ident is None else ident.user,
                     error))

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
    _MIDDLES.clear()  # they hold the parent's pid


os.register_at_fork(before=flush_access_log, after_in_child=_after_fork)
atexit.register(flush_access_log)
