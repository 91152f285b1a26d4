"""Request bodies and answers: every bad body is a 4xx in the one JSON error shape, never a 5xx."""
from __future__ import annotations

import orjson
import pytest

from stimserver.config import Settings
from stimserver.web.app import create_app

from ..conftest import MASTER_KEY

ENDPOINTS = [
    ("POST", "/v1/repo", {"repo_name": "r2"}),
    ("PUT", "/v1/repo", {"repo_name": "r2"}),
    ("POST", "/v1/repo/r1/prompts", {"prompt_name": "p2", "messages": [{"role": "user", "content": "x"}]}),
    ("PUT", "/v1/repo/r1/prompts/p2", {"messages": [{"role": "user", "content": "x"}]}),
    ("POST", "/v1/repo/r1/prompts/batch", {"prompts": {"p2": [{"role": "user", "content": "x"}]}}),
    ("PUT", "/v1/repo/r1/prompts/batch", {"prompts": {"p2": [{"role": "user", "content": "x"}]}}),
    ("POST", "/v1/repo/r1/targets", {"target_name": "t2", "template": "default"}),
    ("PUT", "/v1/repo/r1/targets/t2", {"template": "default"}),
    ("POST", "/v1/repo/r1/targets/batch", {"targets": [{"target_name": "t2", "template": "default"}]}),
    ("PUT", "/v1/repo/r1/targets/batch", {"targets": [{"target_name": "t2", "template": "default"}]}),
]
ENDPOINT_IDS = ["repo-create", "repo-set", "prompt-create", "prompt-set", "prompt-batch", "prompt-batch-set",
                "target-create", "target-set", "target-batch", "target-batch-set"]


def required_field(method: str, path: str) -> str:
    """The required body field the test leaves out."""
    if path == "/v1/repo":
        return "repo_name"
    if path.endswith("/batch"):
        return path.rsplit("/", 2)[-2]
    return "messages" if "/prompts" in path else "template"


@pytest.fixture
async def alice(client, master_headers):
    headers = {**master_headers, "X-User-Id": "alice"}
    assert (await client.post("/v1/repo", json={"repo_name": "r1"}, headers=headers)).status == 201
    return headers


def assert_error_shape(r, body, status):
    assert r.status == status
    assert r.content_type == "application/json"
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["code"], str)


@pytest.mark.parametrize("method, path, good", ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("raw, status", [
    (b'{"repo_name": ', 400),
    (b"", 400),
    (b"[1, 2]", 422),
    (b'"text"', 422),
    (b"null", 422),
    (b"\xff\xfe", 400),
], ids=["malformed", "empty", "array", "string", "null", "not-utf8"])
async def test_unusable_bodies(client, alice, method, path, good, raw, status):
    r = await client.request(method, path, data=raw, headers={**alice, "Content-Type": "application/json"})
    assert_error_shape(r, await r.json(), status)


@pytest.mark.parametrize("method, path, good", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_bad_fields_are_422_naming_them(client, alice, method, path, good):
    r = await client.request(method, path, json={**good, "surprise": 1}, headers=alice)
    body = await r.json()
    assert_error_shape(r, body, 422)
    assert body["detail"][0]["loc"] == ["body", "surprise"] and "surprise" in body["message"]

    field = required_field(method, path)
    missing = {k: v for k, v in good.items() if k != field}
    r = await client.request(method, path, json=missing, headers=alice)
    body = await r.json()
    assert_error_shape(r, body, 422)
    assert {"loc": ["body", field], "msg": "field required", "type": "value_error.missing"} in body["detail"]

    r = await client.request(method, path, json={**good, field: 12}, headers=alice)
    body = await r.json()
    assert_error_shape(r, body, 422)
    assert body["detail"][0]["loc"][:2] == ["body", field]


@pytest.mark.parametrize("method, path, good", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_content_type_is_not_required(client, alice, method, path, good):
    r = await client.request(method, path, data=orjson.dumps(good), headers={**alice, "Content-Type": "text/plain"})
    assert r.status in (200, 201), await r.text()


@pytest.mark.parametrize("method, path, good", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_body_over_the_limit_is_413(aiohttp_client, tmp_path, method, path, good):
    settings = Settings.build(data_dir=tmp_path / "d", master_key=MASTER_KEY, access_log=False, max_body_bytes=2048)
    client = await aiohttp_client(create_app(settings))
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "X-User-Id": "alice"}
    assert (await client.post("/v1/repo", json={"repo_name": "r1"}, headers=headers)).status == 201
    r = await client.request(method, path, json={**good, "padding": "x" * 4096}, headers=headers)
    assert_error_shape(r, await r.json(), 413)


async def test_body_without_content_length_over_the_limit_is_413(aiohttp_client, tmp_path):
    settings = Settings.build(data_dir=tmp_path / "d", master_key=MASTER_KEY, access_log=False, max_body_bytes=2048)
    client = await aiohttp_client(create_app(settings))

    async def chunks():
        for _ in range(8):
            yield b" " * 1024

    r = await client.post("/v1/repo", data=chunks(), headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert_error_shape(r, await r.json(), 413)


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/repo/r1/bakes"),
    ("POST", "/v1/repo/r1/bakes"),
    ("POST", "/v1/repo/r1/bakes/batch"),
    ("PUT", "/v1/repo/r1/bakes/batch"),
    ("GET", "/v1/repo/r1/bakes/b1"),
    ("PUT", "/v1/repo/r1/bakes/b1"),
    ("POST", "/v1/repo/r1/bakes/b1"),
    ("DELETE", "/v1/repo/r1/bakes/b1"),
    ("GET", "/v1/repo/r1/bakes/b1/download?checkpoint=3"),
    ("GET", "/v1/repo/r1/bakes/b1/metrics"),
    ("GET", "/v1/repo/r1/recipe/b1/dependency-graph"),
    ("GET", "/v1/repo/r1/recipe/b1/recreation-plan"),
], ids=["bakes-list", "bake-create", "bake-batch", "bake-batch-set", "bake-get", "bake-set", "bake-run",
        "bake-delete", "bake-download", "bake-metrics", "recipe-graph", "recipe-plan"])
async def test_bake_endpoints_need_a_key(client, method, path):
    r = await client.request(method, path, headers={"Content-Type": "application/json"})
    assert_error_shape(r, await r.json(), 401)


async def test_deletes_answer_200_with_json_even_with_an_empty_json_request(client, alice):
    await client.post("/v1/repo/r1/prompts", json={"prompt_name": "p1", "messages": []}, headers=alice)
    await client.post("/v1/repo/r1/targets", json={"target_name": "t1", "template": "default"}, headers=alice)
    # the official client sends Content-Type: application/json and no body on DELETE
    for path in ("/v1/repo/r1/targets/t1", "/v1/repo/r1/prompts/p1"):
        r = await client.delete(path, headers={**alice, "Content-Type": "application/json"})
        assert r.status == 200 and r.content_type == "application/json"
        assert set(await r.json()) == {"message"}


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/repo/r1/prompts/batch"),
    ("DELETE", "/v1/repo/r1/targets/batch"),
    ("PATCH", "/v1/repo/r1"),
    ("GET", "/v1/repo/r1/targets/bad%2Fname"),
    ("GET", "/v1/repo/..%2F..%2Fetc"),
    ("GET", "/v1/repo?include_metadata=true&offset=--1"),
], ids=["get-batch", "delete-batch", "patch", "encoded-slash", "traversal", "double-minus-offset"])
async def test_odd_requests_are_4xx_json(client, alice, method, path):
    r = await client.request(method, path, headers=alice)
    assert 400 <= r.status < 500
    assert_error_shape(r, await r.json(), r.status)
