"""protocol.py in-process: how aiohttp's errors are classified, and that the runner really swaps the handler."""
from __future__ import annotations

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, BadStatusLine, InvalidHeader, LineTooLong

from stimserver.api.errors import error_middleware
from stimserver.web.protocol import (
    MAX_HEADER_BYTES,
    MAX_URL_BYTES,
    SafeAppRunner,
    SafeRequestHandler,
    SafeServer,
    classify,
)
from tests.serverproc import free_port

SECRET = "sk_secret_in_the_bytes"


@pytest.mark.parametrize("status, exc, expected", [
    (400, LineTooLong(f"/v1/repo?t={SECRET}".encode(), MAX_URL_BYTES), (414, "URI_TOO_LONG")),
    (400, LineTooLong(f"Bearer {SECRET}".encode(), MAX_HEADER_BYTES), (431, "HEADERS_TOO_LARGE")),
    (400, BadHttpMessage("Too many headers received"), (431, "HEADERS_TOO_LARGE")),
    (400, BadHttpMessage(f"Invalid header value char:\n\n  b'Bearer {SECRET}\\x00'"), (400, "INVALID_INPUT")),
    (400, InvalidHeader(f"X-{SECRET}".encode()), (400, "INVALID_INPUT")),
    (400, BadStatusLine(f"GET /?t={SECRET} HTTP/1.1 junk"), (400, "INVALID_INPUT")),
    (400, BadHttpMethod(f"G\x01T /?t={SECRET}"), (400, "INVALID_INPUT")),
    (400, BadHttpMessage(f"Expected HTTP/: b'{SECRET}'"), (400, "INVALID_INPUT")),
    (500, RuntimeError(SECRET), (500, "INTERNAL_ERROR")),
    (504, None, (504, "TIMEOUT")),
], ids=["url", "header", "too-many-headers", "header-char", "header-name", "request-line", "method",
        "other", "internal", "timeout"])
def test_classify(status, exc, expected) -> None:
    got, code, message = classify(status, exc)
    assert (got, code) == expected and message and SECRET not in message


def test_equal_limits_cannot_tell_a_url_from_a_header_so_431() -> None:
    assert classify(400, LineTooLong(b"x", 8190), url_limit=8190, header_limit=8190)[0] == 431


async def test_the_runner_serves_through_the_safe_handler_and_renders_escaped_errors_as_json() -> None:
    """An error raised outside the error middleware reaches handle_error: JSON 500, not aiohttp's text."""

    @web.middleware
    async def broken(request: web.Request, handler):  # outside error_middleware, like a faulty outer middleware
        if request.path == "/broken":
            raise RuntimeError("outer middleware failed")
        return await handler(request)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[broken, error_middleware])
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", ok)
    runner = SafeAppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    try:
        assert isinstance(runner.server, SafeServer)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/ok") as r:
                assert r.status == 200 and await r.json() == {"ok": True}
                assert any(isinstance(p, SafeRequestHandler) for p in runner.server.connections)
            async with session.get(f"http://127.0.0.1:{port}/broken") as r:
                assert r.status == 500 and r.content_type == "application/json"
                assert orjson.loads(await r.read()) == {"message": "internal server error", "code": "INTERNAL_ERROR"}
                assert len(r.headers["X-Request-Id"]) == 16
    finally:
        await runner.cleanup()
