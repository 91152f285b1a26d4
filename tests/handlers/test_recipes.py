"""Recipes and the repo tree: real lineage from the records, a plan that makes the same configs again."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import aibread
import pytest

from stimserver.schemas.targets import DEFAULT_TARGET_CONFIG

from .test_bakes import fake_bake_job, token

TEMPLATE = "Write ${numq} questions for:\n${prompt_u}\n"


@pytest.fixture
def bread(settings):
    from tests.aibread_server import ServerThread

    server = ServerThread(replace(settings, run_jobs=False)).start()
    yield server
    server.stop()


@pytest.fixture
def alice(bread, user_key) -> aibread.Bread:
    return bread.client(token(user_key("alice")), _strict_response_validation=True)


def build(client: aibread.Bread, paths) -> None:
    """prompts → targets (one made from a template target) → bakes (one baked on another's checkpoint)."""
    client.repo.create(repo_name="r1", base_model="smollm2-135m-instruct")
    client.prompts.create_batch("r1", prompts={
        "fr": [{"role": "system", "content": "Answer in French only."}],
        "de": [{"role": "system", "content": "Answer in German only."}],
        "student": [{"role": "system", "content": "You are helpful."}],
        "unused": [{"role": "user", "content": "x"}]})
    client.prompts.create("r1", prompt_name="tooled", messages=[{"role": "system", "content": "t"}],
                          tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    client.targets.create("r1", target_name="base", template="default", overrides={
        "teacher_prompt": "fr", "student_prompt": "student", "model_name": "m", "temperature": 0.7,
        "generators": [{"type": "hardcoded", "questions": ["Q1?", "Q2?"]},
                       {"type": "custom", "numq": 3, "template_content": TEMPLATE}]})
    client.targets.create("r1", target_name="french", template="base", overrides={"num_traj_per_stimulus": 2})
    client.targets.create("r1", target_name="german", template="default", overrides={
        "teacher_prompt": "de", "student_prompt": "", "generators": [{"type": "hardcoded", "questions": ["Q?"]}]})
    client.targets.create("r1", target_name="tools", template="default", overrides={"teacher_prompt": "tooled"})
    client.bakes.create("r1", bake_name="b0", template="default", overrides={
        "datasets": [{"target": "french"}], "epochs": 2})
    fake_bake_job(paths, "alice", "r1", "b0")
    client.bakes.create("r1", bake_name="b1", template="b0", overrides={
        "datasets": [{"target": "german", "weight": 3}, {"target": "tools"}],
        "model": {"parent_model_name": "alice/r1/b0/4", "baked_adapter_config": {"r": 8}}})
    client.bakes.create("r1", bake_name="other", template="default", overrides={"datasets": [{"target": "german"}]})


EDGES = [["bake", "b1", "target", "german"], ["bake", "b1", "target", "tools"], ["bake", "b1", "bake", "b0"],
         ["bake", "b0", "target", "french"], ["target", "german", "prompt", "de"],
         ["target", "tools", "prompt", "tooled"], ["target", "french", "prompt", "fr"],
         ["target", "french", "prompt", "student"], ["target", "french", "target", "base"],
         ["target", "base", "prompt", "fr"], ["target", "base", "prompt", "student"]]


def test_dependency_graph(alice, paths):
    build(alice, paths)
    graph = alice.recipes.get_dependency_graph("b1", repo_name="r1")
    assert graph.base_model == "smollm2-135m-instruct"
    assert list(graph.bakes) == ["b1", "b0"] and graph.bakes["b1"] == alice.bakes.get("b1", repo_name="r1").config
    assert list(graph.targets) == ["german", "tools", "french", "base"]
    assert graph.targets["french"] == alice.targets.get("french", repo_name="r1").config.to_dict()
    assert graph.prompts == {"de": None, "tooled": None, "fr": None, "student": None}
    assert graph.edges == EDGES
    leaf = alice.recipes.get_dependency_graph("other", repo_name="r1")
    assert list(leaf.bakes) == ["other"] and leaf.edges == [["bake", "other", "target", "german"],
                                                            ["target", "german", "prompt", "de"]]
    with pytest.raises(aibread.NotFoundError):
        alice.recipes.get_dependency_graph("ghost", repo_name="r1")


def test_recreation_plan_is_in_dependency_order(alice, paths):
    build(alice, paths)
    plan = alice.recipes.get_recreation_plan("b1", repo_name="r1")
    assert plan.base_model == "smollm2-135m-instruct" and plan.total_steps == len(plan.steps) == 18
    assert [s.step for s in plan.steps] == list(range(1, 19))
    assert [(s.action, s.resource_name) for s in plan.steps] == [
        ("create_prompt", "de"), ("create_prompt", "fr"), ("create_prompt", "student"), ("create_prompt", "tooled"),
        ("create_target", "base"), ("create_target", "french"), ("create_target", "german"),
        ("create_target", "tools"),
        ("run_stim", "french"), ("run_rollout", "french"), ("run_stim", "german"), ("run_rollout", "german"),
        ("run_stim", "tools"), ("run_rollout", "tools"),
        ("create_bake", "b0"), ("run_bake", "b0"), ("create_bake", "b1"), ("run_bake", "b1")]
    steps = {(s.action, s.resource_name): s for s in plan.steps}
    assert steps[("create_target", "french")].dependencies == ["prompt:fr", "prompt:student", "target:base"]
    assert steps[("run_rollout", "german")].dependencies == ["target:german:stim_complete"]
    assert steps[("create_bake", "b1")].dependencies == ["target:german", "target:tools", "bake:b0"]
    assert steps[("run_bake", "b1")].dependencies == ["bake:b1", "target:german:rollout_complete",
                                                      "target:tools:rollout_complete", "bake:b0:complete"]
    assert steps[("create_prompt", "tooled")].config["tools"][0]["function"]["name"] == "f"
    assert "tools" not in steps[("create_prompt", "fr")].config
    assert {s.resource_type for s in plan.steps} == {"prompt", "target", "bake"}
    resources = plan.resources
    assert (resources.prompts, resources.targets) == (["de", "fr", "student", "tooled"],
                                                      ["base", "french", "german", "tools"])
    assert [(b.bake_name, b.api_model_names) for b in resources.bakes] == [
        ("b0", ["alice/r1/b0/4", "alice/r1/b0/2"]), ("b1", None)]


def _replay(client: aibread.Bread, repo: str, plan: Any) -> None:
    """Every create step of a plan, through the client, in ``repo`` (runs need a model server and a trainer)."""
    for step in plan.steps:
        config = step.config
        if step.action == "create_prompt":
            client.prompts.create(repo, prompt_name=step.resource_name, **config)
        elif step.action == "create_target":
            client.targets.create(repo, target_name=step.resource_name, template="default", overrides=config)
        elif step.action == "create_bake":
            client.bakes.create(repo, bake_name=step.resource_name, template="default", overrides=config)


def test_a_replayed_plan_makes_the_same_configs(alice, bread, user_key, paths):
    build(alice, paths)
    plan = alice.recipes.get_recreation_plan("b1", repo_name="r1")
    bob = bread.client(token(user_key("bob")), _strict_response_validation=True)
    bob.repo.create(repo_name="fresh", base_model=plan.base_model)
    _replay(bob, "fresh", plan)
    for name in plan.resources.prompts:
        mine, theirs = alice.prompts.get(name, repo_name="r1"), bob.prompts.get(name, repo_name="fresh")
        assert (mine.messages, mine.tools) == (theirs.messages, theirs.tools)
    for name in plan.resources.targets:
        assert alice.targets.get(name, repo_name="r1").config == bob.targets.get(name, repo_name="fresh").config
        assert set(bob.targets.get(name, repo_name="fresh").to_dict()["config"]) == set(DEFAULT_TARGET_CONFIG)
    for bake in plan.resources.bakes:
        assert alice.bakes.get(bake.bake_name, repo_name="r1").config == \
            bob.bakes.get(bake.bake_name, repo_name="fresh").config
    # the fresh repo's graph is the same lineage but for the parent, which still names alice's checkpoint
    graph = bob.recipes.get_dependency_graph("b1", repo_name="fresh")
    assert list(graph.bakes) == ["b1"] and set(graph.targets) == {"german", "tools"}


def test_a_template_file_named_by_path_is_put_inline(alice, paths):
    build(alice, paths)
    alice.targets.create("r1", target_name="pathonly", template="default", overrides={
        "teacher_prompt": "fr", "model_name": "m",
        "generators": [{"type": "custom", "numq": 1, "template_path": "templates/mine.txt",
                        "template_content": TEMPLATE}]})
    alice.targets.create("r1", target_name="bypath", template="default", overrides={
        "teacher_prompt": "fr", "model_name": "m",
        "generators": [{"type": "custom", "numq": 1, "template_path": "templates/mine.txt"}]})
    alice.bakes.create("r1", bake_name="p", template="default", overrides={"datasets": [{"target": "bypath"}]})
    plan = alice.recipes.get_recreation_plan("p", repo_name="r1")
    step = next(s for s in plan.steps if s.action == "create_target")
    assert step.config["generators"][0] == {"type": "custom", "numq": 1, "template_path": "templates/mine.txt",
                                            "template_content": TEMPLATE}
    graph = alice.recipes.get_dependency_graph("p", repo_name="r1")
    assert "template_content" not in graph.targets["bypath"]["generators"][0]  # the graph shows the config as it is


def test_repo_tree(alice, paths):
    alice.repo.create(repo_name="empty")
    tree = alice.repo.get_tree("empty")
    assert (tree.base_model, tree.bakes, tree.edges) == ("Qwen/Qwen3-32B", {}, [])
    build(alice, paths)
    tree = alice.repo.get_tree("r1")
    assert tree.base_model == "smollm2-135m-instruct" and list(tree.bakes) == ["b0", "b1", "other"]
    b0 = tree.bakes["b0"]
    assert (b0.status, b0.checkpoints, b0.api_model_name) == ("complete", [2, 4], ["alice/r1/b0/4", "alice/r1/b0/2"])
    assert b0.config == alice.bakes.get("b0", repo_name="r1").config
    b1 = tree.bakes["b1"]
    assert (b1.status, b1.checkpoints, b1.api_model_name) == ("not_started", [], None)
    assert tree.edges == [["bake", "b1", "bake", "b0"]]


async def test_async_client_recipes_and_tree(bread, user_key, paths):
    key = token(user_key("alice"))
    build(bread.client(key), paths)
    async with aibread.AsyncBread(api_key=key, base_url=bread.base_url, max_retries=0,
                                  _strict_response_validation=True) as alice:
        graph = await alice.recipes.get_dependency_graph("b1", repo_name="r1")
        assert graph.edges == EDGES
        plan = await alice.recipes.get_recreation_plan("b0", repo_name="r1")
        assert [s.action for s in plan.steps] == ["create_prompt", "create_prompt", "create_target", "create_target",
                                                  "run_stim", "run_rollout", "create_bake", "run_bake"]
        tree = await alice.repo.get_tree("r1")
        assert tree.edges == [["bake", "b1", "bake", "b0"]]
