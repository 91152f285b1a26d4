"""The app's one request middleware: every per-request concern, in one coroutine frame.

Each concern stays in its module — ``proxy.note_forwarded``, ``logs.request_id_of``,
``auth.authenticate``, ``errors.error_response``, ``metrics.observe_request`` — and is
also available there as a middleware of its own. The app runs them from here because
each middleware layer costs a call frame and a wrapper per request, a measurable share
of a page (issue 13). The order is the one the separate middlewares had:

    forwarded → metrics → request id → errors → auth → handler

so metrics count error answers, every answer (errors included) carries ``X-Request-Id``,
and an HTTP exception below 400 (a redirect) passes through, counted but not rendered.
A complete job's plain page takes the same steps in ``fastpage.FastPage.answer``, before
the router: a step added here must be added there (``tests/web/test_fastpage.py`` compares).
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..api.auth import Authenticator, authenticate
from ..api.errors import error_response
from ..api.keys import REQUEST_ID
from .logs import request_id_of
from .metrics import Metrics, observe_request
from .proxy import TrustedProxies, note_forwarded

__all__ = ["request_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_middleware(auth: Authenticator, metrics: Metrics, proxies: TrustedProxies | None = None) -> Middleware:
    """The middleware of an app with these keys, metrics and trusted proxies (none: not consulted)."""
    trusted = proxies if proxies else None

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusted is not None:
            note_forwarded(request, trusted)
        started = time.perf_counter()
        rid = request[REQUEST_ID] = request_id_of(request)
        try:
            authenticate(request, auth)
            response = await handler(request)
        except Exception as e:
            rendered = await error_response(request, e)
            if rendered is None:  # a redirect or the like: through, untouched
                observe_request(metrics, request, started, status=getattr(e, "status", 0))
                raise
            response = rendered
        response.headers["X-Request-Id"] = rid
        observe_request(metrics, request, started, response)
        return response

    return handle
