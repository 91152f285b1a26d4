"""The official ``aibread`` client, unchanged, against a real stimserver: the whole control plane.

The client runs with ``_strict_response_validation=True``, so a missing or mistyped
field in any answer fails the test, not just a wrong value.
"""
from __future__ import annotations

import aibread
import httpx
import pytest

from stimserver.schemas.targets import DEFAULT_BASE_MODEL, DEFAULT_TARGET_CONFIG

from .conftest import MASTER_KEY

MESSAGES = [
    {"role": "system", "content": "You are a pirate."},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                            "function": {"name": "f", "arguments": "{}"}}]},
]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def token(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


@pytest.fixture
def alice(bread_server, user_key) -> aibread.Bread:
    return bread_server.client(token(user_key("alice")), _strict_response_validation=True)


def test_repos(alice):
    raw = alice.repo.with_raw_response.create(repo_name="r1")
    assert raw.status_code == 201
    assert raw.parse().model_dump() == {"repo_name": "r1", "base_model": DEFAULT_BASE_MODEL}
    assert alice.repo.with_raw_response.create(repo_name="r1", base_model=DEFAULT_BASE_MODEL).status_code == 200
    alice.repo.create(repo_name="r0", base_model="org/other")
    with pytest.warns(DeprecationWarning):
        assert alice.repo.set(repo_name="r2").base_model == DEFAULT_BASE_MODEL

    listed = alice.repo.list()
    assert isinstance(listed, aibread.types.repo_list_response.RepoList) and listed.repos == ["r0", "r1", "r2"]
    page = alice.repo.list(include_metadata=True, offset=1, limit=1)
    assert isinstance(page, aibread.types.repo_list_response.PaginatedRepoList)
    assert [(r.repo_name, r.base_model) for r in page.repos] == [("r1", DEFAULT_BASE_MODEL)]
    assert (page.offset, page.limit, page.has_more, page.total) == (1, 1, True, 3)

    assert alice.repo.get("r0").base_model == "org/other"
    tree = alice.repo.get_tree("r0")
    assert (tree.base_model, tree.bakes, tree.edges) == ("org/other", {}, [])


def test_conflicts_are_not_retried(bread_server, user_key):
    client = bread_server.client(token(user_key("alice")), max_retries=2)  # the client's default
    client.repo.create(repo_name="r1", base_model="a/model")
    with pytest.raises(aibread.ConflictError) as caught:
        client.repo.create(repo_name="r1", base_model="b/model")
    assert caught.value.response.request.headers["x-stainless-retry-count"] == "0"  # the first try was the last
    assert caught.value.body["code"] == "RESOURCE_CONFLICT"


def test_prompts(alice):
    alice.repo.create(repo_name="r1")
    raw = alice.prompts.with_raw_response.create("r1", prompt_name="p1", messages=MESSAGES, tools=TOOLS)
    assert raw.status_code == 201
    got = alice.prompts.get("p1", repo_name="r1")
    assert got.model_dump(exclude_unset=True) == {"prompt_name": "p1", "messages": MESSAGES, "tools": TOOLS}
    assert got.messages[1].to_dict()["tool_calls"][0]["id"] == "c1"  # extra keys survive the round trip
    assert alice.prompts.with_raw_response.create("r1", prompt_name="p1", messages=MESSAGES,
                                                  tools=TOOLS).status_code == 200
    with pytest.raises(aibread.ConflictError):
        alice.prompts.create("r1", prompt_name="p1", messages=MESSAGES[:1])
    with pytest.raises(aibread.UnprocessableEntityError):
        alice.prompts.create("r1", prompt_name="bad name", messages=MESSAGES)

    batch = alice.prompts.create_batch("r1", prompts={"p2": MESSAGES[:1], "p1": MESSAGES[:1], "bad.": MESSAGES})
    assert batch.created == ["p2"] and set(batch.failed) == {"p1", "bad."}
    with pytest.warns(DeprecationWarning):
        batch = alice.prompts.batch_set("r1", prompts={"p1": MESSAGES[:1]})
    assert (batch.created, batch.failed) == (["p1"], {})
    with pytest.warns(DeprecationWarning):
        assert alice.prompts.set("p3", repo_name="r1", messages=MESSAGES).prompt_name == "p3"
    assert alice.prompts.list("r1").prompts == ["p1", "p2", "p3"]
    with pytest.raises(aibread.NotFoundError):
        alice.prompts.get("nope", repo_name="r1")


def test_targets(alice):
    alice.repo.create(repo_name="r1")
    alice.prompts.create_batch("r1", prompts={"teacher": MESSAGES[:1], "student": MESSAGES[:1]})
    raw = alice.targets.with_raw_response.create("r1", target_name="base", template="default", overrides={
        "u": "teacher", "v": "student", "generators": [{"type": "hardcoded", "questions": ["A?", "B?"]}],
        "model_name": "my-model", "temperature": 0.5})
    assert raw.status_code == 201
    base = raw.parse()
    assert base.target_name == "base" and base.config.api_model_name == "my-model"
    assert base.config.teacher_prompt == "teacher" and base.config.student_prompt == "student"
    assert set(raw.http_response.json()["config"]) == set(DEFAULT_TARGET_CONFIG)

    derived = alice.targets.create("r1", target_name="hot", template="base", overrides={"temperature": 1.9})
    assert derived.config.temperature == 1.9 and derived.config.generators[0].questions == ["A?", "B?"]
    with pytest.raises(aibread.NotFoundError):
        alice.targets.create("r1", target_name="x", template="nonexistent")
    with pytest.raises(aibread.UnprocessableEntityError) as caught:
        alice.targets.create("r1", target_name="x", template="default", overrides={"temperature": 2.5})
    assert "temperature" in caught.value.body["message"]
    with pytest.raises(aibread.UnprocessableEntityError):
        alice.targets.create("r1", target_name="x", template="default", overrides={"teacher_prompt": "ghost"})
    with pytest.raises(aibread.ConflictError):
        alice.targets.create("r1", target_name="hot", template="base")

    batch = alice.targets.create_batch("r1", targets=[
        {"target_name": "b1", "template": "base", "overrides": {"max_tokens": 64}},
        {"target_name": "b2", "template": "b1"},
        {"target_name": "b3", "template": "nonexistent"},
    ])
    assert batch.created == ["b1", "b2"] and batch.failed == {"b3": "Template 'nonexistent' not found"}
    with pytest.warns(DeprecationWarning):
        batch = alice.targets.batch_set("r1", targets=[{"target_name": "b4", "template": "b2"}])
    assert batch.created == ["b4"]
    with pytest.warns(DeprecationWarning):
        assert alice.targets.set("b5", repo_name="r1", template="b4").config.max_tokens == 64
    assert alice.targets.get("b5", repo_name="r1").config.max_tokens == 64
    assert alice.targets.list("r1").targets == ["b1", "b2", "b4", "b5", "base", "hot"]

    assert alice.targets.delete("hot", repo_name="r1").message == "Target 'hot' deleted successfully"
    with pytest.raises(aibread.NotFoundError):
        alice.targets.get("hot", repo_name="r1")
    with pytest.raises(aibread.NotFoundError):
        alice.targets.delete("hot", repo_name="r1")


def test_master_key_acts_as_a_user(bread_server, alice):
    alice.repo.create(repo_name="mine")
    master = bread_server.client(MASTER_KEY, _strict_response_validation=True)
    assert master.repo.list().repos == []  # the master key's own user has nothing
    assert master.repo.list(x_user_id="alice").repos == ["mine"]
    assert master.repo.list(user_id="alice").repos == ["mine"]
    master.prompts.create("mine", prompt_name="p", messages=MESSAGES[:1], x_user_id="alice")
    assert alice.prompts.list("mine").prompts == ["p"]
    with pytest.raises(aibread.PermissionDeniedError):
        alice.repo.list(x_user_id="bob")


def test_other_users_see_nothing(bread_server, alice, user_key):
    alice.repo.create(repo_name="r1")
    bob = bread_server.client(token(user_key("bob")), _strict_response_validation=True)
    assert bob.repo.list().repos == []
    for call in (lambda: bob.repo.get("r1"), lambda: bob.prompts.list("r1"), lambda: bob.targets.list("r1")):
        with pytest.raises(aibread.NotFoundError):
            call()


def test_bakes_of_an_unknown_repo_or_bake_are_not_found(alice):
    for call in (lambda: alice.bakes.list("nope"), lambda: alice.bakes.get("b", repo_name="nope"),
                 lambda: alice.recipes.get_dependency_graph("b", repo_name="nope")):
        with pytest.raises(aibread.NotFoundError):
            call()
    alice.repo.create(repo_name="r1")
    with pytest.raises(aibread.NotFoundError):
        alice.bakes.get("b", repo_name="r1")


def test_no_key_and_bad_key(bread_server):
    with pytest.raises(aibread.AuthenticationError):
        bread_server.client("wrong-key").repo.list()
    assert httpx.get(bread_server.base_url + "/v1/repo").status_code == 401
