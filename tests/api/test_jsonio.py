"""jsonio: bodies read and parsed into the schemas' models, and JSON answers."""
from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from stimserver.api.errors import error_middleware
from stimserver.api.jsonio import json_response, parse_body, raise_422, read_json_object, same_json
from stimserver.api.keys import SETTINGS
from stimserver.config import Settings
from stimserver.schemas.repos import RepoCreate
from stimserver.schemas.validation import problem


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    async def echo(request: web.Request) -> web.Response:
        body = await read_json_object(request)
        repo = parse_body(RepoCreate, body)
        return json_response({"repo_name": repo.repo_name, "base_model": repo.base_model})

    app = web.Application(middlewares=[error_middleware], client_max_size=64)
    app[SETTINGS] = Settings.build(data_dir=tmp_path, max_body_bytes=64)
    app.router.add_post("/x", echo)
    return await aiohttp_client(app)


@pytest.mark.parametrize("raw, status, code", [
    (b"", 400, "INVALID_INPUT"),
    (b"   \n", 400, "INVALID_INPUT"),
    (b"{not json", 400, "INVALID_INPUT"),
    (b"[1, 2]", 422, "VALIDATION_ERROR"),
    (b'"a string"', 422, "VALIDATION_ERROR"),
    (b'{"repo_name": "' + b"r" * 80 + b'"}', 413, "PAYLOAD_TOO_LARGE"),
], ids=["empty", "blank", "malformed", "array", "string", "too-large"])
async def test_bad_bodies_get_the_error_shape(client, raw, status, code):
    r = await client.post("/x", data=raw)
    body = await r.json()
    assert r.status == status and body["code"] == code and body["message"]
    if status == 422:
        assert body["detail"] == [{"loc": ["body"], "msg": body["detail"][0]["msg"], "type": "type_error.object"}]


async def test_a_body_is_parsed_with_its_model_and_every_problem_named(client):
    r = await client.post("/x", data=orjson.dumps({"repo_name": "ok", "base_model": None}))
    assert r.status == 200 and await r.json() == {"repo_name": "ok", "base_model": None}  # null counts as absent
    r = await client.post("/x", data=orjson.dumps({"repo_name": "../x", "extra": 1}))
    body = await r.json()
    assert r.status == 422 and {tuple(d["loc"]) for d in body["detail"]} == {("body", "repo_name"),
                                                                               ("body", "extra")}


def test_raise_422_only_when_there_is_a_problem():
    raise_422([])
    with pytest.raises(Exception) as e:
        raise_422([problem(["body", "x"], "is wrong", "value_error")])
    assert e.value.status == 422 and e.value.detail[0]["loc"] == ["body", "x"]


@pytest.mark.parametrize("a, b, same", [
    ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),
    ({"a": 1}, {"a": 1.0}, False),
    ({"a": 1}, {"a": True}, False),
    ([1, 2], [2, 1], False),
], ids=["key-order", "int-float", "int-bool", "list-order"])
def test_same_json_compares_as_json(a, b, same):
    assert same_json(a, b) is same
