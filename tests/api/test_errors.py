"""One JSON error shape for every error, whoever raised it."""
from __future__ import annotations

from aiohttp import web

from stimserver.api.errors import Conflict, ValidationError, error_middleware


async def app_with(aiohttp_client, handler):
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/x", handler)
    return await aiohttp_client(app)


async def test_api_error_shape(aiohttp_client):
    async def h(request):
        raise ValidationError("generators.0.numq: must be at least 1",
                              detail=[{"loc": ["body", "generators", 0, "numq"], "msg": "must be at least 1",
                                       "type": "value_error"}])

    client = await app_with(aiohttp_client, h)
    r = await client.get("/x")
    assert r.status == 422 and r.content_type == "application/json"
    assert await r.json() == {"message": "generators.0.numq: must be at least 1", "code": "VALIDATION_ERROR",
                              "detail": [{"loc": ["body", "generators", 0, "numq"], "msg": "must be at least 1",
                                          "type": "value_error"}]}


async def test_conflict_tells_client_not_to_retry(aiohttp_client):
    async def h(request):
        raise Conflict("prompts are immutable")

    client = await app_with(aiohttp_client, h)
    r = await client.get("/x")
    assert r.status == 409 and r.headers["x-should-retry"] == "false"
    assert (await r.json())["code"] == "RESOURCE_CONFLICT"


async def test_unexpected_exception_is_500_json_without_traceback(aiohttp_client, caplog):
    async def h(request):
        raise RuntimeError("secret internals /etc/passwd")

    client = await app_with(aiohttp_client, h)
    r = await client.get("/x")
    body = await r.json()
    assert r.status == 500 and body == {"message": "internal server error", "code": "INTERNAL_ERROR"}
    assert "Traceback" in caplog.text  # logged for the operator, not sent to the client


async def test_unknown_route_and_wrong_method_are_json(client, master_headers):
    r = await client.get("/nope", headers=master_headers)
    assert r.status == 404 and (await r.json())["code"] == "RESOURCE_NOT_FOUND"
    r = await client.delete("/v1/health")
    assert r.status == 405 and (await r.json())["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in r.headers["Allow"]


async def test_every_response_has_a_request_id(client):
    r = await client.get("/v1/health", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    r = await client.get("/nope", headers={"X-Request-Id": "bad id with spaces"})
    assert r.headers["X-Request-Id"] != "bad id with spaces" and len(r.headers["X-Request-Id"]) == 16
