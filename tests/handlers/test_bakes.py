"""Bakes over HTTP and through the official client: create, templates, batches, status, run, delete, metrics, links.

Job folders are written by hand here (``fake_bake_job``: job.json, metrics rows, checkpoints
with small fake adapter files), as the trainer leaves them; training itself is tested elsewhere.
The app runs no job runner (``run_jobs`` off) so hand-made records stay exactly as written.
"""
from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import aibread
import orjson
import pytest

from stimserver.api.keys import JOB_CONTROL
from stimserver.jobs import ConfigProblem, JobBusy
from stimserver.schemas.bakes import DEFAULT_BAKE_CONFIG, merge
from stimserver.store import bakefiles, jobrecords
from stimserver.store.locks import FileLock
from stimserver.store.output import lock_path
from stimserver.store.paths import DataPaths
from stimserver.web.app import create_app

from ..conftest import MASTER_KEY

BASE = "/v1/repo/r1/bakes"
MESSAGES = [{"role": "system", "content": "Answer in French only."}]
CHECKPOINT_FILES = {  # what a trainer's checkpoint folder holds; the last five only to resume
    "adapter_model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 4,
    "adapter_config.json": b'{"peft_type": "LORA", "r": 32}',
    "tokenizer.json": b'{"version": "1.0"}',
    "tokenizer_config.json": b"{}",
    "special_tokens_map.json": b"{}",
    "README.md": b"# bake\nbase model: smollm2-135m-instruct\n",
    "optimizer.pt": b"optimizer state",
    "scheduler.pt": b"scheduler state",
    "rng_state.pth": b"rng",
    "trainer_state.json": b"{}",
    "training_args.bin": b"args",
}
ARCHIVED = ("README.md", "adapter_config.json", "adapter_model.safetensors", "special_tokens_map.json",
            "tokenizer.json", "tokenizer_config.json")


def train_rows(steps: int = 4) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"type": "eval", "iter": 0, "epoch": 0.0, "eval_loss": 0.9, "heldout_kl": 0.8}]
    for i in range(1, steps + 1):
        rows.append({"type": "train", "iter": i, "epoch": i / steps, "loss": 1.0 / i, "lr": 2e-4, "step_time": 0.5,
                     "iter_time": 0.5, "tokens": 100 + i, "seqlen": 40})
    rows.append({"type": "eval", "iter": steps, "epoch": 1.0, "eval_loss": 0.2, "heldout_kl": 0.1})
    return rows


def fake_bake_job(paths: DataPaths, user: str, repo: str, bake: str, *, status: str = "complete", job_id: int = 7,
                  steps: tuple[int, ...] = (2, 4), rows: list[dict[str, Any]] | None = None,
                  plan: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None,
                  error: str | None = None, failure: str | None = None) -> Path:
    """A bake's job folder as the trainer leaves it; returns it."""
    job_dir = paths.job_dir(user, repo, bake, "bake")
    job_dir.mkdir(parents=True, exist_ok=True)
    jobrecords.write_record(job_dir, {
        "job_id": job_id, "kind": "bake", "status": status, "config": {}, "error": error, "created_at": None,
        "spec": {"user": user, "repo": repo, "bake": bake, "datasets": [
            {"target": "french", "weight": 1.0, "rollout_job_id": 3, "trajectories": 24, "skipped_failed": 1,
             "used": 23}]}})
    bakefiles.append_rows(job_dir, train_rows(4) if rows is None else rows)
    bakefiles.write_json(job_dir, bakefiles.PLAN, plan or {"total_steps": 4, "steps_per_epoch": 4, "train_examples": 20,
                                                           "eval_examples": 3, "skipped_too_long": 0, "truncated": 1,
                                                           "train_tokens": 410, "world_size": 1})
    if evaluation is not None:
        bakefiles.write_json(job_dir, bakefiles.EVAL, evaluation)
    if failure is not None:
        bakefiles.write_failure(job_dir, failure, "data")
    for step in steps:
        add_checkpoint(job_dir, step)
    return job_dir


def add_checkpoint(job_dir: Path, step: int) -> Path:
    folder = bakefiles.checkpoint_dir(job_dir, step)
    folder.mkdir(parents=True)
    for name, data in CHECKPOINT_FILES.items():
        (folder / name).write_bytes(data + str(step).encode())
    (folder / bakefiles.CHECKPOINT_INFO).write_bytes(orjson.dumps(
        {"step": step, "epoch": 1.0, "loss": 0.25, "created_at": "2026-01-01T00:00:00Z"}))
    return folder


EVALUATION = {"checkpoint": 4, "heldout": {"examples": 24, "stimuli": 12, "kl_before": 0.8, "kl_after": 0.1,
                                           "kl_drop": 0.875},
              "behaviour": {"check": "language", "teacher_language": "fr", "questions": 12, "teacher_rate": 0.9,
                            "base_rate": 0.0, "baked_rate": 0.75},
              "samples": [{"question": "Q?"}]}


@pytest.fixture
def idle_settings(settings):
    return replace(settings, run_jobs=False)


@pytest.fixture
async def idle(aiohttp_client, idle_settings):
    """An app with no job runner, so hand-made job records stay exactly as written."""
    return await aiohttp_client(create_app(idle_settings))


@pytest.fixture
def alice(master_headers):
    return {**master_headers, "X-User-Id": "alice"}


async def call(client, method, path, headers, body=None):
    r = await client.request(method, path, json=body, headers=headers)
    return r.status, await r.json()


async def setup_repo(client, headers, repo="r1", targets=("french", "german")):
    assert (await client.post("/v1/repo", json={"repo_name": repo}, headers=headers)).status == 201
    r = await client.post(f"/v1/repo/{repo}/prompts", json={"prompt_name": "fr", "messages": MESSAGES},
                          headers=headers)
    assert r.status == 201
    for target in targets:
        r = await client.post(f"/v1/repo/{repo}/targets", json={"target_name": target, "template": "default",
                                                                 "overrides": {"teacher_prompt": "fr",
                                                                               "student_prompt": ""}},
                              headers=headers)
        assert r.status == 201


@pytest.fixture
async def repo(idle, alice):
    await setup_repo(idle, alice)
    return idle


async def create(client, headers, name, template="default", overrides=None):
    body: dict[str, Any] = {"bake_name": name, "template": template}
    if overrides is not None:
        body["overrides"] = overrides
    return await call(client, "POST", BASE, headers, body)


FRENCH = {"datasets": [{"target": "french"}]}


def config(**overrides):
    return merge(DEFAULT_BAKE_CONFIG, {"datasets": [{"target": "french", "weight": 1.0}], **overrides})


NOT_STARTED = {"status": "not_started", "error": None, "job_id": None, "lines": None, "loss": None, "model_name": None,
               "progress_percent": None, "checkpoints": [], "total_steps": None, "steps_done": None, "evaluation": None,
               "data": None}


# -- creation ----------------------------------------------------------------------------------------------------
async def test_create_repeat_and_conflict(repo, alice):
    status, body = await create(repo, alice, "b1", overrides=FRENCH)
    assert (status, body) == (201, {**NOT_STARTED, "config": config()})
    assert await create(repo, alice, "b1", overrides=FRENCH) == (200, body)
    # the same config by another route is the same bake: the default template, named whole
    assert (await create(repo, alice, "b1", overrides=config()))[0] == 200
    r = await repo.post(BASE, json={"bake_name": "b1", "template": "default", "overrides": {**FRENCH, "epochs": 2}},
                        headers=alice)
    answer = await r.json()
    assert r.status == 409 and r.headers["x-should-retry"] == "false"
    assert answer["code"] == "RESOURCE_CONFLICT" and answer["message"].startswith("Bakes are immutable")
    assert await call(repo, "GET", BASE + "/b1", alice) == (200, body)


async def test_templates_merge_objects_and_replace_lists(repo, alice):
    await create(repo, alice, "base", overrides={**FRENCH, "model": {"baked_adapter_config": {"r": 8}},
                                                 "optimizer": {"learning_rate": 1e-3}})
    status, body = await create(repo, alice, "child", "base", {
        "datasets": [{"target": "german", "weight": 2}], "model": {"baked_adapter_config": {"lora_alpha": 4}},
        "data": {"train_eval_split": [1, 0]}})
    assert status == 201
    got = body["config"]
    assert got["datasets"] == [{"target": "german", "weight": 2.0}]  # a list is replaced whole
    assert got["model"]["baked_adapter_config"] == {**DEFAULT_BAKE_CONFIG["model"]["baked_adapter_config"],
                                                    "r": 8, "lora_alpha": 4}
    assert got["optimizer"]["learning_rate"] == 1e-3 and got["optimizer"]["type"] == "adamw"
    assert got["data"]["train_eval_split"] == [1.0, 0.0] and got["data"]["max_length"] == 3000
    # the template's config was copied: deleting it changes nothing, and the same request is still 200
    assert (await call(repo, "DELETE", BASE + "/base", alice))[0] == 200
    assert await call(repo, "GET", BASE + "/child", alice) == (200, body)
    assert (await create(repo, alice, "child", "base", {
        "datasets": [{"target": "german", "weight": 2}], "model": {"baked_adapter_config": {"lora_alpha": 4}},
        "data": {"train_eval_split": [1, 0]}}))[0] == 200


async def test_unknown_template_is_404_and_bad_input_is_422(repo, alice):
    status, body = await create(repo, alice, "b1", "nope")
    assert (status, body["message"]) == (404, "Template 'nope' not found")
    assert (await create(repo, alice, "b1", "../x"))[0] == 404
    status, body = await create(repo, alice, "b1", overrides={"model": {"foo": 1}})
    assert status == 422 and body["message"] == "overrides.model.foo: unknown field 'foo'"
    assert body["detail"][0]["loc"] == ["body", "overrides", "model", "foo"]
    for name in ("default", "batch", "a.", "x" * 129, "a b"):
        status, body = await create(repo, alice, name)
        assert status == 422 and body["detail"][0]["loc"] == ["body", "bake_name"], name
    status, body = await call(repo, "POST", BASE, alice, {"bake_name": "b1"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "template"]
    r = await repo.post(BASE, data=b"not json", headers=alice)
    assert r.status == 400
    assert (await call(repo, "GET", BASE, alice)) == (200, {"bakes": []})


async def test_references_must_exist(repo, alice):
    status, body = await create(repo, alice, "b1", overrides={"datasets": [{"target": "french"}, {"target": "ghost"}]})
    assert status == 422
    assert [(d["loc"], d["type"]) for d in body["detail"]] == [
        (["body", "overrides", "datasets", 1, "target"], "value_error.target_not_found")]
    status, body = await create(repo, alice, "b1", overrides={**FRENCH, "model": {
        "parent_model_name": "alice/r1/nobake/3"}})
    assert status == 422 and body["detail"][0]["type"] == "value_error.bake_not_found"
    assert body["detail"][0]["loc"] == ["body", "overrides", "model", "parent_model_name"]
    status, body = await create(repo, alice, "b1", overrides={**FRENCH, "model": {
        "parent_model_name": "alice/r1/b1/3"}})
    assert status == 422 and "own checkpoint" in body["message"]
    # other repos, users and hub names are the trainer's to resolve at run
    for parent in ("alice/other/b0/3", "bob/r1/b0/3", "Qwen/Qwen3-0.6B", "/models/x"):
        assert (await create(repo, alice, f"p{len(parent)}", overrides={**FRENCH, "model": {
            "parent_model_name": parent}}))[0] == 201
    await create(repo, alice, "b0", overrides=FRENCH)
    status, body = await create(repo, alice, "b2", overrides={**FRENCH, "model": {
        "parent_model_name": "alice/r1/b0/3"}})
    assert status == 201 and body["config"]["model"]["parent_model_name"] == "alice/r1/b0/3"


async def test_deprecated_put_and_batches(repo, alice):
    status, body = await call(repo, "PUT", BASE + "/b1", alice, {"template": "default", "overrides": FRENCH})
    assert status == 200 and body["config"] == config()
    assert (await call(repo, "PUT", BASE + "/default", alice, {"template": "default"}))[0] == 422
    assert (await call(repo, "PUT", BASE + "/b1", alice, {"template": "default"}))[0] == 409
    for method in ("POST", "PUT"):
        status, body = await call(repo, method, BASE + "/batch", alice, {"bakes": [
            {"bake_name": f"x{method}", "template": "b1", "overrides": {"epochs": 2}},
            {"bake_name": f"y{method}", "template": f"x{method}"},
            {"bake_name": "b1", "template": "default", "overrides": FRENCH},
            {"bake_name": "bad", "template": "nope"},
            {"bake_name": "worse", "template": "default", "overrides": {"epochs": 0}},
            {"template": "default"},
            "not an object",
        ]})
        assert status == 200
        assert body["created"] == [f"x{method}", f"y{method}", "b1"]
        assert set(body["failed"]) == {"bad", "worse", "bakes[5]", "bakes[6]"}
        assert body["failed"]["bad"] == "Template 'nope' not found"
        assert "epochs" in body["failed"]["worse"]
    assert (await call(repo, "POST", BASE + "/batch", alice, {"bakes": {}}))[0] == 422
    status, body = await call(repo, "GET", BASE, alice)
    assert body == {"bakes": ["b1", "xPOST", "xPUT", "yPOST", "yPUT"]}
    assert (await call(repo, "GET", BASE + "/yPUT", alice))[1]["config"]["epochs"] == 2


async def test_unknown_repo_bake_and_other_users(repo, alice, master_headers):
    await create(repo, alice, "b1", overrides=FRENCH)
    for path in ("/v1/repo/nope/bakes", "/v1/repo/nope/bakes/b1", BASE + "/nope", BASE + "/nope/metrics",
                 BASE + "/nope/download"):
        assert (await call(repo, "GET", path, alice))[0] == 404, path
    bob = {**master_headers, "X-User-Id": "bob"}
    assert (await call(repo, "GET", BASE + "/b1", bob))[0] == 404
    assert (await call(repo, "GET", BASE + "/a%20b", alice))[0] == 422
    r = await repo.get(BASE)
    assert r.status == 401


# -- status -------------------------------------------------------------------------------------------------------
async def test_status_of_a_complete_bake(repo, alice, paths):
    await create(repo, alice, "b1", overrides=FRENCH)
    fake_bake_job(paths, "alice", "r1", "b1", evaluation=EVALUATION)
    status, body = await call(repo, "GET", BASE + "/b1", alice)
    assert status == 200
    assert body == {
        "status": "complete", "config": config(), "error": None, "job_id": 7, "lines": None,
        "loss": {"latest_loss": 0.25, "min_loss": 0.25, "max_loss": 1.0, "final_loss": 0.25},
        "model_name": ["alice/r1/b1/4", "alice/r1/b1/2"], "progress_percent": 100.0, "checkpoints": [2, 4],
        "total_steps": 4, "steps_done": 4,
        "evaluation": {k: EVALUATION[k] for k in ("checkpoint", "heldout", "behaviour")},
        "data": {"datasets": [{"target": "french", "weight": 1.0, "rollout_job_id": 3, "trajectories": 24,
                               "skipped_failed": 1, "used": 23}],
                 "train_examples": 20, "eval_examples": 3, "skipped_too_long": 0, "truncated": 1,
                 "train_tokens": 410, "steps_per_epoch": 4, "world_size": 1}}


async def test_status_of_a_running_and_a_failed_bake(repo, alice, paths):
    await create(repo, alice, "run", overrides=FRENCH)
    job_dir = fake_bake_job(paths, "alice", "r1", "run", status="running", steps=(2,),
                            rows=train_rows(4)[:4], plan={"total_steps": 8})
    with FileLock.acquire(lock_path(job_dir), blocking=False):  # a live trainer's parent holds it
        status, body = await call(repo, "GET", BASE + "/run", alice)
    assert status == 200 and body["status"] == "running"
    assert body["loss"] == {"latest_loss": 1 / 3, "min_loss": 1 / 3, "max_loss": 1.0}  # no final_loss yet
    assert (body["progress_percent"], body["steps_done"], body["total_steps"]) == (37.5, 3, 8)
    assert body["model_name"] == ["alice/r1/run/2"] and body["evaluation"] is None

    await create(repo, alice, "bad", overrides=FRENCH)
    fake_bake_job(paths, "alice", "r1", "bad", status="failed", steps=(), rows=[], plan={"total_steps": 8},
                  failure="datasets: no usable trajectory")
    status, body = await call(repo, "GET", BASE + "/bad", alice)
    assert (body["status"], body["error"], body["loss"], body["model_name"], body["progress_percent"]) == (
        "failed", "datasets: no usable trajectory", None, None, 0.0)


async def test_a_pending_bake_without_a_runner_ends(repo, alice, paths, idle_settings):
    """A status read of an active bake goes through JobRunner.observe: no runner → orphaned, then failed."""
    await create(repo, alice, "b1", overrides=FRENCH)
    fake_bake_job(paths, "alice", "r1", "b1", status="pending", steps=(), rows=[])
    repo.app[JOB_CONTROL].orphan_seconds = 0
    status, body = await call(repo, "GET", BASE + "/b1", alice)
    assert status == 200 and body["status"] == "failed" and "no job runner" in body["error"]


async def test_metrics(repo, alice, paths):
    await create(repo, alice, "b1", overrides=FRENCH)
    r = await repo.get(BASE + "/b1/metrics", headers=alice)
    assert r.status == 200 and r.content_type == "application/json" and await r.json() == []
    job_dir = fake_bake_job(paths, "alice", "r1", "b1")
    with open(job_dir / bakefiles.METRICS, "ab") as f:
        f.write(b'{"type": "train", "iter": 5, "lo')  # a torn last line (a crash mid-append) is left out
    r = await repo.get(BASE + "/b1/metrics", headers=alice)
    assert r.status == 200 and await r.json() == train_rows(4)


# -- run ----------------------------------------------------------------------------------------------------------
class FakeControl:
    """What the handlers ask of the job runner, recorded."""

    def __init__(self, paths: DataPaths, *, submit_error: Exception | None = None) -> None:
        self.paths = paths
        self.submit_error = submit_error
        self.calls: list[tuple[Any, ...]] = []
        self.stop_releases = True

    async def submit(self, ref, record):
        self.calls.append(("submit", ref, record["bake_name"]))
        if self.submit_error is not None:
            raise self.submit_error
        job_dir = ref.job_dir(self.paths)
        job_dir.mkdir(parents=True, exist_ok=True)
        job = {"job_id": 11, "kind": "bake", "status": "pending", "config": {}, "error": None, "spec": {}}
        jobrecords.write_record(job_dir, job)
        return job

    async def settle(self, ref, job, wait):
        self.calls.append(("settle", ref, wait))
        return job

    async def observe(self, ref, job):
        self.calls.append(("observe", ref))
        return job

    async def stop_bake(self, user, repo, bake):
        self.calls.append(("stop_bake", user, repo, bake))
        return True

    def install(self, app, monkeypatch) -> FakeControl:
        """Stand in for the app's job runner in what the handlers ask of it."""
        runner = app[JOB_CONTROL]
        for name in ("submit", "settle", "observe", "stop_bake"):
            monkeypatch.setattr(runner, name, getattr(self, name), raising=False)
        return self


async def test_run_submits_and_answers_at_once(repo, alice, paths, monkeypatch):
    await create(repo, alice, "b1", overrides=FRENCH)
    control = FakeControl(paths).install(repo.app, monkeypatch)
    status, body = await call(repo, "POST", BASE + "/b1", alice)
    assert status == 200
    assert {**body, "config": None} == {**NOT_STARTED, "config": None, "status": "pending", "job_id": 11,
                                        "progress_percent": 0.0, "steps_done": 0}
    assert [c[0] for c in control.calls] == ["submit", "settle"]
    assert str(control.calls[0][1]) == "alice/r1/b1/bake" and control.calls[1][2] == 1.0


@pytest.mark.parametrize("error, status", [(ConfigProblem("datasets: target 'french' has no complete rollout"), 400),
                                           (JobBusy("still shutting down"), 409)])
async def test_run_refusals(repo, alice, paths, error, status, monkeypatch):
    await create(repo, alice, "b1", overrides=FRENCH)
    FakeControl(paths, submit_error=error).install(repo.app, monkeypatch)
    r = await repo.post(BASE + "/b1", headers=alice)
    assert r.status == status and (await r.json())["message"] == str(error)
    if status == 409:
        assert r.headers["x-should-retry"] == "false"


async def test_run_with_the_real_runner_refuses_what_cannot_run(repo, alice):
    await create(repo, alice, "empty")
    status, body = await call(repo, "POST", BASE + "/empty", alice)
    assert status == 400 and "datasets" in body["message"]
    await create(repo, alice, "b1", overrides=FRENCH)  # french has no rollout
    status, body = await call(repo, "POST", BASE + "/b1", alice)
    assert status == 400 and "french" in body["message"]
    assert (await call(repo, "GET", BASE + "/b1", alice))[1]["status"] == "not_started"


# -- delete -------------------------------------------------------------------------------------------------------
async def test_delete_stops_then_removes(repo, alice, paths, monkeypatch):
    await create(repo, alice, "b1", overrides=FRENCH)
    fake_bake_job(paths, "alice", "r1", "b1")
    control = FakeControl(paths).install(repo.app, monkeypatch)
    status, body = await call(repo, "DELETE", BASE + "/b1", alice)
    assert (status, body) == (200, {"message": "Bake 'b1' deleted successfully"})
    assert control.calls == [("stop_bake", "alice", "r1", "b1")]
    assert not paths.bake("alice", "r1", "b1").exists() and list(paths.bakes("alice", "r1").iterdir()) == []
    assert (await call(repo, "GET", BASE + "/b1", alice))[0] == 404
    assert (await call(repo, "DELETE", BASE + "/b1", alice))[0] == 404
    assert (await create(repo, alice, "b1", overrides={**FRENCH, "epochs": 3}))[0] == 201  # the name is free again


async def test_delete_refused_while_a_trainer_holds_on_or_a_child_names_it(repo, alice, paths, monkeypatch):
    await create(repo, alice, "b1", overrides=FRENCH)
    job_dir = fake_bake_job(paths, "alice", "r1", "b1", status="running")
    FakeControl(paths).install(repo.app, monkeypatch)
    with FileLock.acquire(lock_path(job_dir), blocking=False):  # stop_bake gave up: the trainer lives on
        r = await repo.delete(BASE + "/b1", headers=alice)
        assert r.status == 409 and r.headers["x-should-retry"] == "false"
    await create(repo, alice, "child", overrides={**FRENCH, "model": {"parent_model_name": "alice/r1/b1/4"}})
    status, body = await call(repo, "DELETE", BASE + "/b1", alice)
    assert status == 409 and "child" in body["message"]
    assert (await call(repo, "DELETE", BASE + "/child", alice))[0] == 200
    assert (await call(repo, "DELETE", BASE + "/b1", alice))[0] == 200


async def test_concurrent_creates_make_one_bake(repo, alice):
    answers = await asyncio.gather(*(create(repo, alice, "b1", overrides=FRENCH) for _ in range(8)))
    assert sorted(status for status, _ in answers) == [200] * 7 + [201]
    answers = await asyncio.gather(*(create(repo, alice, f"c{i % 2}", overrides={**FRENCH, "epochs": 1 + i})
                                     for i in range(6)))
    assert sorted(status for status, _ in answers).count(201) == 2


# -- the official client ----------------------------------------------------------------------------------------
@pytest.fixture
def bread(idle_settings):
    from tests.aibread_server import ServerThread

    server = ServerThread(idle_settings).start()
    yield server
    server.stop()


def token(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


def prepare(client: aibread.Bread, repo: str = "r1") -> None:
    client.repo.create(repo_name=repo, base_model="smollm2-135m-instruct")
    client.prompts.create(repo, prompt_name="fr", messages=MESSAGES)
    for target in ("french", "german"):
        client.targets.create(repo, target_name=target, template="default",
                              overrides={"teacher_prompt": "fr", "student_prompt": ""})


def test_client_bakes(bread, user_key, paths):
    alice = bread.client(token(user_key("alice")), _strict_response_validation=True)
    prepare(alice)
    raw = alice.bakes.with_raw_response.create("r1", bake_name="b1", template="default", overrides={
        "datasets": [{"target": "french"}], "model": {"baked_adapter_config": {"r": 8}}})
    assert raw.status_code == 201
    made = raw.parse()
    assert made.status == "not_started" and made.config["model"]["baked_adapter_config"]["r"] == 8
    assert made.api_model_name is None and made.loss is None
    assert alice.bakes.with_raw_response.create("r1", bake_name="b1", template="default", overrides={
        "datasets": [{"target": "french"}], "model": {"baked_adapter_config": {"r": 8}}}).status_code == 200
    with pytest.raises(aibread.ConflictError) as caught:
        alice.bakes.create("r1", bake_name="b1", template="default")
    assert caught.value.body["message"].startswith("Bakes are immutable")
    with pytest.raises(aibread.UnprocessableEntityError) as caught:
        alice.bakes.create("r1", bake_name="b2", template="default", overrides={"model": {"foo": 1}})  # type: ignore
    assert caught.value.body["message"] == "overrides.model.foo: unknown field 'foo'"
    with pytest.raises(aibread.NotFoundError):
        alice.bakes.create("r1", bake_name="b2", template="ghost")

    batch = alice.bakes.create_batch("r1", bakes=[{"bake_name": "b2", "template": "b1", "overrides": {"epochs": 2}},
                                                  {"bake_name": "b3", "template": "ghost"}])
    assert (batch.created, batch.failed) == (["b2"], {"b3": "Template 'ghost' not found"})
    with pytest.warns(DeprecationWarning):
        batch = alice.bakes.batch_set("r1", bakes=[{"bake_name": "b3", "template": "b2"}])
    assert (batch.created, batch.failed) == (["b3"], {})
    with pytest.warns(DeprecationWarning):
        assert alice.bakes.set("b4", repo_name="r1", template="b3").config["epochs"] == 2
    assert alice.bakes.list("r1").bakes == ["b1", "b2", "b3", "b4"]

    fake_bake_job(paths, "alice", "r1", "b1", evaluation=EVALUATION)
    got = alice.bakes.get("b1", repo_name="r1")
    assert got.status == "complete" and got.api_model_name == ["alice/r1/b1/4", "alice/r1/b1/2"]
    assert got.loss == {"latest_loss": 0.25, "min_loss": 0.25, "max_loss": 1.0, "final_loss": 0.25}
    assert got.progress_percent == 100.0 and got.job_id == 7 and got.to_dict()["checkpoints"] == [2, 4]
    assert alice.bakes.run("b1", repo_name="r1").status == "complete"  # a complete bake: no 30 s poll
    metrics = alice.bakes.get_metrics("b1", repo_name="r1")
    assert metrics == train_rows(4) and {"iter", "epoch", "loss", "lr", "step_time", "tokens"} <= set(metrics[1])
    assert alice.bakes.get_metrics("b2", repo_name="r1") == []

    link = alice.bakes.download("b1", repo_name="r1")
    assert (link.bake_name, link.checkpoint, link.expires_in) == ("b1", 4, 3600)
    assert link.url.startswith(bread.base_url + "/v1/downloads/bakes/alice/r1/b1/4?")
    link = alice.bakes.download("b1", repo_name="r1", checkpoint=2, expires_in=604800)
    assert (link.checkpoint, link.expires_in) == (2, 604800)
    for kwargs in ({"expires_in": 0}, {"expires_in": 604801}, {"checkpoint": -1}):
        with pytest.raises(aibread.UnprocessableEntityError):
            alice.bakes.download("b1", repo_name="r1", **kwargs)
    with pytest.raises(aibread.NotFoundError):
        alice.bakes.download("b1", repo_name="r1", checkpoint=3)
    with pytest.raises(aibread.NotFoundError):
        alice.bakes.download("b2", repo_name="r1")  # never ran

    assert alice.bakes.delete("b4", repo_name="r1").message == "Bake 'b4' deleted successfully"
    with pytest.raises(aibread.NotFoundError):
        alice.bakes.get("b4", repo_name="r1")
    master = bread.client(MASTER_KEY, _strict_response_validation=True)
    assert master.bakes.list("r1", x_user_id="alice").bakes == ["b1", "b2", "b3"]
    bob = bread.client(token(user_key("bob")), _strict_response_validation=True)
    with pytest.raises(aibread.NotFoundError):
        bob.bakes.get("b1", repo_name="r1")


async def test_async_client_bakes(bread, user_key, paths):
    key = token(user_key("alice"))
    prepare(bread.client(key))
    async with aibread.AsyncBread(api_key=key, base_url=bread.base_url, max_retries=0,
                                  _strict_response_validation=True) as alice:
        made = await alice.bakes.create("r1", bake_name="b1", template="default",
                                        overrides={"datasets": [{"target": "french", "weight": 2}]})
        assert made.config["datasets"] == [{"target": "french", "weight": 2.0}]
        batch = await alice.bakes.create_batch("r1", bakes=[{"bake_name": "b2", "template": "b1"}])
        assert batch.created == ["b2"]
        assert (await alice.bakes.list("r1")).bakes == ["b1", "b2"]
        fake_bake_job(paths, "alice", "r1", "b1")
        got = await alice.bakes.get("b1", repo_name="r1")
        assert got.status == "complete" and got.api_model_name[0] == "alice/r1/b1/4"
        assert (await alice.bakes.run("b1", repo_name="r1")).status == "complete"
        assert len(await alice.bakes.get_metrics("b1", repo_name="r1")) == 6
        link = await alice.bakes.download("b1", repo_name="r1", checkpoint=2, expires_in=60)
        assert (link.checkpoint, link.expires_in) == (2, 60)
        assert (await alice.bakes.delete("b2", repo_name="r1")).message == "Bake 'b2' deleted successfully"
        with pytest.raises(aibread.UnprocessableEntityError):
            await alice.bakes.create("r1", bake_name="b3", template="default", overrides={"epochs": 0})


def test_config_in_answers_is_a_copy(repo=None):
    """DEFAULT_BAKE_CONFIG is never handed out to be changed."""
    first = merge(DEFAULT_BAKE_CONFIG, {})
    first["model"]["baked_adapter_config"]["r"] = 1
    assert DEFAULT_BAKE_CONFIG["model"]["baked_adapter_config"]["r"] == 32
    assert copy.deepcopy(DEFAULT_BAKE_CONFIG) == merge(DEFAULT_BAKE_CONFIG, {})
