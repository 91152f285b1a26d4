"""Users are isolated: nobody sees, lists or changes another user's repos, even by name."""
from __future__ import annotations

import pytest

MESSAGES = [{"role": "system", "content": "secret"}]


@pytest.fixture
async def world(client, user_key, master_headers):
    """alice owns r1 with prompt p1 and target t1; bob has his own key and no repos."""
    alice, bob = user_key("alice"), user_key("bob")
    for method, path, body in (
        ("POST", "/v1/repo", {"repo_name": "r1", "base_model": "alice/model"}),
        ("POST", "/v1/repo/r1/prompts", {"prompt_name": "p1", "messages": MESSAGES}),
        ("POST", "/v1/repo/r1/targets", {"target_name": "t1", "template": "default",
                                         "overrides": {"teacher_prompt": "p1"}}),
    ):
        assert (await client.request(method, path, json=body, headers=alice)).status == 201
    return {"alice": alice, "bob": bob, "master": master_headers}


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/repo/r1", None),
    ("GET", "/v1/repo/r1/tree", None),
    ("GET", "/v1/repo/r1/prompts", None),
    ("GET", "/v1/repo/r1/prompts/p1", None),
    ("PUT", "/v1/repo/r1/prompts/p1", {"messages": MESSAGES}),
    ("DELETE", "/v1/repo/r1/prompts/p1", None),
    ("POST", "/v1/repo/r1/prompts", {"prompt_name": "p2", "messages": MESSAGES}),
    ("POST", "/v1/repo/r1/prompts/batch", {"prompts": {"p2": MESSAGES}}),
    ("PUT", "/v1/repo/r1/prompts/batch", {"prompts": {"p1": MESSAGES}}),
    ("GET", "/v1/repo/r1/targets", None),
    ("GET", "/v1/repo/r1/targets/t1", None),
    ("PUT", "/v1/repo/r1/targets/t1", {"template": "default"}),
    ("DELETE", "/v1/repo/r1/targets/t1", None),
    ("POST", "/v1/repo/r1/targets", {"target_name": "t2", "template": "t1"}),
    ("POST", "/v1/repo/r1/targets/batch", {"targets": [{"target_name": "t2", "template": "t1"}]}),
    ("GET", "/v1/repo/r1/targets/t1/stim", None),
    ("GET", "/v1/repo/r1/targets/t1/stim/output", None),
], ids=["repo", "tree", "prompts", "prompt", "prompt-set", "prompt-delete", "prompt-create", "prompt-batch",
        "prompt-batch-set", "targets", "target", "target-set", "target-delete", "target-create", "target-batch",
        "stim-status", "stim-output"])
async def test_another_user_sees_nothing_by_name(client, world, method, path, body):
    for who in ("bob", "master"):  # bob's own key, and the master key acting as its own user
        r = await client.request(method, path, json=body, headers=world[who])
        assert r.status == 404, who
        assert (await r.json())["code"] == "RESOURCE_NOT_FOUND"
    # alice's data is untouched
    r = await client.get("/v1/repo/r1/prompts", headers=world["alice"])
    assert await r.json() == {"prompts": ["p1"]}
    r = await client.get("/v1/repo/r1/targets", headers=world["alice"])
    assert await r.json() == {"targets": ["t1"]}


async def test_lists_and_creates_are_per_user(client, world):
    for query in ("", "?include_metadata=true"):
        r = await client.get(f"/v1/repo{query}", headers=world["bob"])
        assert (await r.json())["repos"] == []
    # bob may use the same name with another base model: it is his own repo
    r = await client.post("/v1/repo", json={"repo_name": "r1", "base_model": "bob/model"}, headers=world["bob"])
    assert r.status == 201
    r = await client.get("/v1/repo/r1", headers=world["alice"])
    assert (await r.json())["base_model"] == "alice/model"
    r = await client.get("/v1/repo/r1/prompts", headers=world["bob"])
    assert await r.json() == {"prompts": []}


@pytest.mark.parametrize("how", ["header", "query"])
async def test_master_acting_as_a_user_sees_exactly_their_view(client, world, how):
    headers, query = dict(world["master"]), ""
    if how == "header":
        headers["X-User-Id"] = "alice"
    else:
        query = "?user_id=alice"
    for path in ("/v1/repo", "/v1/repo/r1", "/v1/repo/r1/prompts", "/v1/repo/r1/prompts/p1",
                 "/v1/repo/r1/targets", "/v1/repo/r1/targets/t1"):
        as_master = await client.get(path + query, headers=headers)
        as_alice = await client.get(path, headers=world["alice"])
        assert (as_master.status, await as_master.json()) == (200, await as_alice.json())
    r = await client.post("/v1/repo/r1/prompts" + query, json={"prompt_name": "p2", "messages": MESSAGES},
                          headers=headers)
    assert r.status == 201
    r = await client.get("/v1/repo/r1/prompts", headers=world["alice"])
    assert await r.json() == {"prompts": ["p1", "p2"]}


async def test_a_user_key_cannot_act_as_another_user(client, world):
    r = await client.get("/v1/repo/r1", headers={**world["bob"], "X-User-Id": "alice"})
    assert r.status == 403
    r = await client.get("/v1/repo?user_id=alice", headers=world["bob"])
    assert r.status == 403
