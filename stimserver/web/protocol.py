"""Requests aiohttp cannot parse: answered in the one JSON error shape, logged without their bytes.

aiohttp answers a request its parser refuses (a NUL in a header, a header or URL over its
limits, a broken request line) from ``RequestHandler.handle_error``, outside the app and
its middlewares: a plain-text 400 that echoes the offending bytes, and an "Error handling
request" traceback whose exception message holds them too — often a bearer token or the
master key. ``SafeRequestHandler.handle_error`` instead answers ``{"message", "code"}``
(400, 414 or 431) with a fresh ``X-Request-Id``, logs one line (the error kind, the
client, the request id) and tags the request so that the access log records it with a
null route. Nothing of the request's bytes is kept. Errors that escape the app's own
middlewares (500, 504) get the JSON shape too; their traceback is logged as before.

The hook: ``SafeAppRunner`` is ``web.AppRunner`` whose server (``SafeServer``) makes
``SafeRequestHandler``s, and it flushes the access log once shutdown has drained.
"""
from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler

from ..api.errors import error_body
from ..api.keys import REQUEST_ID
from .logs import REQUEST_ERROR, flush_access_log, new_request_id

__all__ = ["SafeAppRunner", "SafeServer", "SafeRequestHandler", "classify", "MAX_URL_BYTES", "MAX_HEADER_BYTES"]

log = logging.getLogger("stimserver.protocol")

# The two limits differ on purpose: aiohttp's LineTooLong names only the limit it hit,
# so that is how a too-long URL (414) is told from a too-long header (431).
MAX_URL_BYTES = 8192     # the request target
MAX_HEADER_BYTES = 8190  # one header, name and value (aiohttp's default)
MAX_HEADERS = 128        # aiohttp's default


def classify(status: int, exc: BaseException | None, url_limit: int = MAX_URL_BYTES,
             header_limit: int = MAX_HEADER_BYTES) -> tuple[int, str, str]:
    """(status, code, message) for an error aiohttp hands to ``handle_error``; never the request's bytes."""
    if status >= 500 or not isinstance(exc, HttpProcessingError):
        if status == 504:
            return 504, "TIMEOUT", "the request took too long"
        if status < 500:
            return status, "INVALID_INPUT", "malformed request"
        return 500, "INTERNAL_ERROR", "internal server error"
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == url_limit and url_limit != header_limit:
            return 414, "URI_TOO_LONG", f"the request URL is longer than {url_limit} bytes"
        return 431, "HEADERS_TOO_LARGE", f"a request header is longer than {header_limit} bytes"
    if isinstance(exc, BadHttpMessage) and exc.message.startswith("Too many headers"):
        return 431, "HEADERS_TOO_LARGE", f"more than {MAX_HEADERS} request headers"
    if isinstance(exc, BadHttpMethod):
        if "HTTPS" in exc.message:  # aiohttp's own wording for a TLS handshake on this port
            return 400, "INVALID_INPUT", "this port speaks plain HTTP, not HTTPS"
        return 400, "INVALID_INPUT", "malformed request line: unknown method"
    if isinstance(exc, InvalidURLError):
        return 400, "INVALID_INPUT", "malformed request URL"
    if isinstance(exc, BadStatusLine):
        return 400, "INVALID_INPUT", "malformed request line"
    if isinstance(exc, InvalidHeader):
        return 400, "INVALID_INPUT", "malformed request header"
    if exc.code == 413:
        return 413, "PAYLOAD_TOO_LARGE", "request too large"
    # The C parser's messages are "<llhttp's description>: <the bytes>"; only the description is looked at.
    if "header" in exc.message.split(":", 1)[0].lower():
        return 400, "INVALID_INPUT", "malformed request header"
    return 400, "INVALID_INPUT", "malformed request: not valid HTTP/1.1"


class SafeRequestHandler(RequestHandler):
    """aiohttp's connection protocol with ``handle_error`` answering JSON and logging no request bytes."""

    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        status, code, text = classify(status, exc, self.max_line_size, self.max_field_size)
        rid = request.get(REQUEST_ID) or new_request_id()
        request[REQUEST_ID] = rid
        if status >= 500:
            log.error("unhandled error answered %d (request_id %s)", status, rid, exc_info=exc)
        else:
            request[REQUEST_ERROR] = code
            # Non-HTTP traffic (scanners, TLS) as a connection's first request is internet noise.
            quiet = self._request_count == 1 and isinstance(exc, BadHttpMethod)
            log.log(logging.DEBUG if quiet else logging.WARNING, "refused a malformed request from %s: %s, %s %s "
                    "(request_id %s)", request.remote, type(exc).__name__, status, code, rid)
        if request.writer.output_size > 0:  # the answer has begun: the connection is beyond saving
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = web.Response(status=status, body=error_body(status, code, text), content_type="application/json",
                                headers={"X-Request-Id": rid})
        response.force_close()
        return response


class SafeServer(web.Server):
    """``web.Server`` whose connections are ``SafeRequestHandler``s."""

    def __call__(self) -> RequestHandler:
        return SafeRequestHandler(self, loop=self._loop, **self._kwargs)


class SafeAppRunner(web.AppRunner):
    """``web.AppRunner`` serving through ``SafeServer``, with the header limits above as defaults.

    Its ``cleanup`` flushes the buffered access log after the requests in flight drained.
    """

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_URL_BYTES)
        kwargs.setdefault("max_field_size", MAX_HEADER_BYTES)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app, as AppRunner does
        return SafeServer(plain.request_handler, request_factory=plain.request_factory,
                          handler_cancellation=plain.handler_cancellation, loop=plain._loop, **plain._kwargs)

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            flush_access_log()
