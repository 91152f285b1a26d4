"""Prompts over plain HTTP: verbatim storage, immutability, batches, deletion."""
from __future__ import annotations

import asyncio

import pytest

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "wx", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny", "name": "wx", "x-extra": {"nested": [1, 2.5, True]}},
]
TOOLS = [{"type": "function", "function": {"name": "wx", "parameters": {"type": "object", "properties": {}}}}]
BASE = "/v1/repo/r1/prompts"


@pytest.fixture
async def alice(client, master_headers):
    headers = {**master_headers, "X-User-Id": "alice"}
    r = await client.post("/v1/repo", json={"repo_name": "r1"}, headers=headers)
    assert r.status == 201
    return headers


async def call(client, method, path, headers, body=None):
    r = await client.request(method, path, json=body, headers=headers)
    return r.status, await r.json()


async def test_round_trip_is_verbatim(client, alice):
    status, body = await call(client, "POST", BASE, alice, {"prompt_name": "p1", "messages": MESSAGES, "tools": TOOLS})
    assert status == 201
    assert body == {"prompt_name": "p1", "messages": MESSAGES, "tools": TOOLS}
    status, body = await call(client, "GET", BASE + "/p1", alice)
    assert (status, body) == (200, {"prompt_name": "p1", "messages": MESSAGES, "tools": TOOLS})


async def test_identical_is_200_and_different_is_409(client, alice):
    one = {"prompt_name": "p1", "messages": MESSAGES[:1]}
    assert (await call(client, "POST", BASE, alice, one))[0] == 201
    assert (await call(client, "POST", BASE, alice, {**one, "tools": None}))[0] == 200  # null = absent
    r = await client.post(BASE, json={**one, "messages": MESSAGES[:2]}, headers=alice)
    assert r.status == 409 and r.headers["x-should-retry"] == "false"
    assert "immutable" in (await r.json())["message"]
    r = await client.post(BASE, json={**one, "tools": TOOLS}, headers=alice)
    assert r.status == 409


async def test_list_get_and_missing(client, alice):
    for name in ("b", "a", "C"):
        await call(client, "POST", BASE, alice, {"prompt_name": name, "messages": MESSAGES[:1]})
    assert await call(client, "GET", BASE, alice) == (200, {"prompts": ["C", "a", "b"]})
    status, body = await call(client, "GET", BASE + "/zz", alice)
    assert status == 404 and body["code"] == "RESOURCE_NOT_FOUND"
    for method, path in (("GET", "/v1/repo/none/prompts"), ("GET", "/v1/repo/none/prompts/a"),
                         ("POST", "/v1/repo/none/prompts")):
        status, _ = await call(client, method, path, alice, {"prompt_name": "a", "messages": []})
        assert status == 404


async def test_deprecated_put_creates_and_updates(client, alice):
    status, body = await call(client, "PUT", BASE + "/p1", alice, {"messages": MESSAGES[:1]})
    assert (status, body) == (200, {"prompt_name": "p1", "messages": MESSAGES[:1], "tools": None})
    status, body = await call(client, "PUT", BASE + "/p1", alice, {"messages": MESSAGES, "tools": TOOLS})
    assert (status, body["messages"], body["tools"]) == (200, MESSAGES, TOOLS)
    assert (await call(client, "GET", BASE + "/p1", alice))[1]["messages"] == MESSAGES
    status, body = await call(client, "PUT", BASE + "/p1", alice, {"prompt_name": "p1", "messages": MESSAGES})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "prompt_name"]


@pytest.mark.parametrize("messages, loc", [
    ("hello", ["body", "messages"]),
    ([["role", "user"]], ["body", "messages", 0]),
    ([{"content": "x"}], ["body", "messages", 0, "role"]),
    ([{"role": 1, "content": "x"}], ["body", "messages", 0, "role"]),
    ([{"role": "user", "content": 3}], ["body", "messages", 0, "content"]),
    ([{"role": "user", "content": ["text"]}], ["body", "messages", 0, "content", 0]),
], ids=["not-a-list", "message-not-object", "no-role", "role-not-string", "content-number", "content-part-not-object"])
async def test_bad_messages_are_422(client, alice, messages, loc):
    status, body = await call(client, "POST", BASE, alice, {"prompt_name": "p", "messages": messages})
    assert status == 422 and body["code"] == "VALIDATION_ERROR"
    assert body["detail"][0]["loc"] == loc


@pytest.mark.parametrize("body, loc", [
    ({"messages": MESSAGES}, ["body", "prompt_name"]),
    ({"prompt_name": "p"}, ["body", "messages"]),
    ({"prompt_name": "p", "messages": MESSAGES, "tools": {"a": 1}}, ["body", "tools"]),
    ({"prompt_name": "p", "messages": MESSAGES, "tools": ["fn"]}, ["body", "tools", 0]),
    ({"prompt_name": "p", "messages": MESSAGES, "temperature": 1}, ["body", "temperature"]),
    ({"prompt_name": "a/b", "messages": MESSAGES}, ["body", "prompt_name"]),
], ids=["no-name", "no-messages", "tools-object", "tool-not-object", "unknown-field", "bad-name"])
async def test_bad_create_bodies_are_422(client, alice, body, loc):
    status, answer = await call(client, "POST", BASE, alice, body)
    assert status == 422 and answer["detail"][0]["loc"] == loc


async def test_batch_create_reports_each_item(client, alice):
    await call(client, "POST", BASE, alice, {"prompt_name": "same", "messages": MESSAGES[:1]})
    await call(client, "POST", BASE, alice, {"prompt_name": "other", "messages": MESSAGES[:1]})
    status, body = await call(client, "POST", BASE + "/batch", alice, {"prompts": {
        "new1": MESSAGES, "bad/name": MESSAGES, "same": MESSAGES[:1], "other": MESSAGES[:2],
        "broken": [{"content": "no role"}], "batch": MESSAGES, "nulled": None,
    }})
    assert status == 200
    assert body["created"] == ["new1", "same"]
    assert set(body["failed"]) == {"bad/name", "other", "broken", "batch", "nulled"}
    assert "invalid character" in body["failed"]["bad/name"]
    assert "immutable" in body["failed"]["other"]
    assert "role" in body["failed"]["broken"]
    assert (await call(client, "GET", BASE + "/other", alice))[1]["messages"] == MESSAGES[:1]
    assert (await call(client, "GET", BASE, alice))[1] == {"prompts": ["new1", "other", "same"]}


async def test_batch_set_updates(client, alice):
    await call(client, "POST", BASE, alice, {"prompt_name": "p1", "messages": MESSAGES[:1]})
    status, body = await call(client, "PUT", BASE + "/batch", alice, {"prompts": {"p1": MESSAGES, "p2": MESSAGES}})
    assert (status, body) == (200, {"created": ["p1", "p2"], "failed": {}})
    assert (await call(client, "GET", BASE + "/p1", alice))[1]["messages"] == MESSAGES


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize("body, loc", [
    ({}, ["body", "prompts"]),
    ({"prompts": ["p1"]}, ["body", "prompts"]),
    ({"prompts": {}, "extra": 1}, ["body", "extra"]),
], ids=["missing", "not-an-object", "unknown-field"])
async def test_batch_body_shape_is_422(client, alice, method, body, loc):
    status, answer = await call(client, method, BASE + "/batch", alice, body)
    assert status == 422 and answer["detail"][0]["loc"] == loc


async def test_delete(client, alice):
    await call(client, "POST", BASE, alice, {"prompt_name": "p1", "messages": MESSAGES})
    status, body = await call(client, "DELETE", BASE + "/p1", alice)
    assert status == 200 and "p1" in body["message"]
    assert (await call(client, "GET", BASE + "/p1", alice))[0] == 404
    assert (await call(client, "DELETE", BASE + "/p1", alice))[0] == 404
    assert (await call(client, "GET", BASE, alice))[1] == {"prompts": []}


async def test_delete_refused_while_a_target_uses_it(client, alice):
    await call(client, "POST", BASE, alice, {"prompt_name": "u", "messages": MESSAGES})
    status, _ = await call(client, "POST", "/v1/repo/r1/targets", alice,
                           {"target_name": "t1", "template": "default", "overrides": {"teacher_prompt": "u"}})
    assert status == 201
    r = await client.delete(BASE + "/u", headers=alice)
    body = await r.json()
    assert r.status == 409 and "t1" in body["message"] and r.headers["x-should-retry"] == "false"
    assert (await call(client, "DELETE", "/v1/repo/r1/targets/t1", alice))[0] == 200
    assert (await call(client, "DELETE", BASE + "/u", alice))[0] == 200


async def test_racing_creates_make_one_prompt(client, alice, records):
    body = {"prompt_name": "race", "messages": MESSAGES}
    statuses = sorted([s for s, _ in await asyncio.gather(*(call(client, "POST", BASE, alice, body)
                                                            for _ in range(6)))])
    assert statuses == [200] * 5 + [201]
    assert records.prompt_names("alice", "r1") == ["race"]
