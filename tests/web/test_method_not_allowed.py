"""405 and its Allow header: only the methods the matched route serves."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize(("path", "allow"), [
    ("/v1/repo/r1/prompts/batch", "POST,PUT"),  # not also GET/DELETE of …/prompts/{prompt_name}
    ("/v1/repo/r1/targets/batch", "POST,PUT"),
    ("/v1/repo/r1/prompts/p1", "DELETE,GET,HEAD,PUT"),
    ("/v1/repo/r1/prompts", "GET,HEAD,POST"),
    ("/v1/health", "GET,HEAD"),
], ids=["prompts-batch", "targets-batch", "prompt", "prompts", "health"])
async def test_options_answers_405_with_the_routes_own_methods(client, master_headers, path, allow):
    r = await client.options(path, headers=master_headers)
    assert r.status == 405 and r.headers["Allow"] == allow
    assert r.content_type == "application/json"
    assert await r.json() == {"message": f"method OPTIONS is not allowed on {path}", "code": "METHOD_NOT_ALLOWED"}


async def test_a_wrong_method_on_a_batch_route_names_its_methods(client, master_headers):
    r = await client.patch("/v1/repo/r1/targets/batch", headers=master_headers, json={})
    assert r.status == 405 and r.headers["Allow"] == "POST,PUT"
