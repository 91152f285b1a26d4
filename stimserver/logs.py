"""Access logs as one JSON object per line, and the request id that ties them together.

The id comes from an incoming ``X-Request-Id`` (when it looks sane, e.g. set by nginx)
or is made here; it is echoed as a response header. Lines carry method, route
template, status, duration, user and bytes — never a token or a query string with one.
``remote`` is the real client: behind a trusted proxy (``proxy.py``) the address it
forwarded, with the proxy's own address in ``via``; ``pid`` tells the processes of
``serve --workers N`` apart.
"""
from __future__ import annotations

import os
import secrets
import sys
import time
from typing import IO, Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .keys import CLIENT_ADDR, IDENTITY, REQUEST_ID

__all__ = ["request_id_middleware", "JsonAccessLogger"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
_PID = os.getpid()


def _after_fork() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 64 and all(c in _ID_CHARS for c in given):
        return given
    return secrets.token_hex(8)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request[REQUEST_ID] = _request_id(request)
    response = await handler(request)
    response.headers["X-Request-Id"] = rid
    return response


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access logger writing compact JSON lines to stdout."""

    stream: IO[bytes] = sys.stdout.buffer

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        match_info = getattr(request, "match_info", None)
        route = match_info.route.resource.canonical if match_info is not None and match_info.route.resource else None
        ident = request.get(IDENTITY)
        client = request.get(CLIENT_ADDR)
        entry = {
            "ts": round(time.time(), 3),
            "request_id": request.get(REQUEST_ID),
            "remote": client or request.remote,
            "via": request.remote if client else None,
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time_ * 1000, 3),
            "bytes": response.body_length,
            "user": ident.user if ident is not None else None,
            "pid": _PID,
        }
        try:
            self.stream.write(orjson.dumps(entry) + b"\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full log stream must not break serving

    @property
    def enabled(self) -> bool:
        return True
