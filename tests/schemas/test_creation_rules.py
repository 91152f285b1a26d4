"""What is knowable when a target is created is refused then (422), by the rules a stim run applies again (400)."""
from __future__ import annotations

import pytest

BASE = "/v1/repo/r1/targets"
GOOD = "Write ${numq} questions for:\n${prompt_u}\n"


@pytest.fixture
async def alice(client, master_headers):
    headers = {**master_headers, "X-User-Id": "alice"}
    assert (await client.post("/v1/repo", json={"repo_name": "r1"}, headers=headers)).status == 201
    for name in ("u1", "v1"):
        r = await client.post("/v1/repo/r1/prompts", json={"prompt_name": name, "messages": [
            {"role": "system", "content": f"prompt {name}"}]}, headers=headers)
        assert r.status == 201
    return headers


async def create(client, headers, name, overrides, template="default"):
    r = await client.post(BASE, json={"target_name": name, "template": template, "overrides": overrides},
                          headers=headers)
    return r.status, await r.json()


def stim_target(*generators, **config):
    return {"teacher_prompt": "u1", "student_prompt": "v1", "generators": list(generators), **config}


async def test_unknown_placeholder_is_422_at_creation(client, alice):
    gen = {"type": "oneshot_qs", "numq": 3, "model": "m", "template_content": GOOD + "${foo}"}
    status, body = await create(client, alice, "t1", stim_target(gen))
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "overrides", "generators", 0, "template_content"]
    assert "unknown placeholder ${foo}" in body["message"]


async def test_llm_generator_without_a_model_anywhere_is_422(client, alice):
    status, body = await create(client, alice, "t1", stim_target({"type": "persona", "numq": 3}))
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "overrides", "generators", 0, "model"]
    assert "model is required" in body["message"]
    # the target's model_name counts, also when it comes from the template
    assert (await create(client, alice, "t2", stim_target({"type": "persona", "numq": 3}, model_name="m")))[0] == 201
    assert (await create(client, alice, "t3", {"generators": [{"type": "oneshot_qs", "numq": 1}]}, "t2"))[0] == 201


async def test_an_inherited_generator_without_a_model_is_422_naming_the_template(client, alice, records):
    # a template target stored before this rule existed: an LLM generator and no model
    config = {**stim_target({"type": "oneshot_qs", "numq": 2}), "model_name": None, "num_traj_per_stimulus": 1,
              "max_concurrency": 10, "temperature": 1.0, "max_tokens": None, "extra_kwargs": {}}
    records.create_target("alice", "r1", {"target_name": "old", "template": "default", "overrides": {},
                                          "config": config})
    status, body = await create(client, alice, "child", {"temperature": 0.5}, "old")
    assert status == 422 and body["detail"][0]["loc"] == ["body", "template"]
    assert (await create(client, alice, "fixed", {"model_name": "m"}, "old"))[0] == 201


async def test_template_path_naming_no_file_is_422(client, alice):
    gen = {"type": "custom", "numq": 2, "model": "m", "template_path": "templates/absent.txt"}
    status, body = await create(client, alice, "t1", stim_target(gen))
    assert status == 422 and "templates/absent.txt does not exist" in body["message"]


async def test_a_stored_template_file_is_checked_by_the_same_rule(client, alice, records):
    records.write_template("alice", "r1", "bad.txt", "no placeholders at all")
    gen = {"type": "custom", "numq": 2, "model": "m", "template_path": "bad.txt"}
    status, body = await create(client, alice, "t1", stim_target(gen))
    assert status == 422 and body["detail"][0]["loc"] == ["body", "overrides", "generators", 0, "template_path"]
    assert "template must contain ${numq} and ${prompt_u}" in body["message"]


async def test_created_target_whose_prompt_is_removed_later_is_400_at_stim(client, alice, records):
    gen = {"type": "hardcoded", "questions": ["a?", "b?"]}
    assert (await create(client, alice, "t1", stim_target(gen)))[0] == 201
    # the API refuses to delete a prompt a target uses; the record can still vanish (by hand, or an older store)
    assert records.delete_prompt("alice", "r1", "u1")
    r = await client.post(BASE + "/t1/stim", headers=alice)
    body = await r.json()
    assert r.status == 400 and body["code"] == "INVALID_INPUT"
    assert body["message"] == "teacher_prompt 'u1' does not exist in repo 'r1'"  # creation's rule, as a 400


async def test_created_target_whose_template_file_changes_later_is_400_at_stim(client, alice, records):
    writer = {"type": "custom", "numq": 2, "model": "m", "template_path": "mine.txt", "template_content": GOOD}
    assert (await create(client, alice, "t1", stim_target(writer)))[0] == 201  # writes templates/mine.txt
    reader = {"type": "custom", "numq": 2, "model": "m", "template_path": "mine.txt"}
    assert (await create(client, alice, "t2", stim_target(reader)))[0] == 201
    records.write_template("alice", "r1", "mine.txt", GOOD + "${foo}")
    assert (await create(client, alice, "t3", stim_target(reader)))[0] == 422  # refused at creation now
    r = await client.post(BASE + "/t2/stim", headers=alice)  # and at the run, by the same rule
    body = await r.json()
    assert r.status == 400 and "unknown placeholder ${foo}" in body["message"]
    assert body["message"].startswith("generators[0] (custom): templates/mine.txt: ")
