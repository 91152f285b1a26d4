"""A checkpoint's evaluation on request over HTTP: ``POST``/``GET …/bakes/{b}/checkpoints/{n}/evaluation``,
the viewer's reads (``…/evaluation?checkpoint=n``) and its one write (``POST /ui/…``).

Job folders are written by hand (``fake_bake_job``) and the app runs no job runner, so a request
stays as the handler wrote it; the runner's side is in tests/jobs/test_bake_evaluations.py.
"""
from __future__ import annotations

import orjson
import pytest

from stimserver.api.sessions import COOKIE_NAME
from stimserver.handlers.bakes import NO_RUNNER
from stimserver.store import bakefiles
from stimserver.store.locks import FileLock
from stimserver.store.paths import DataPaths

from ..conftest import MASTER_KEY
from .test_bakes import EVALUATION, FRENCH, alice, create, fake_bake_job, idle, idle_settings, repo  # noqa: F401

BAKE = "/v1/repo/r1/bakes/b1"
RESULT = {"checkpoint": 2, "heldout": {"examples": 24, "stimuli": 12, "kl_before": 0.8, "kl_after": 0.3,
                                       "kl_drop": 0.625},
          "behaviour": {"check": "language", "teacher_language": "fr", "questions": 12, "teacher_rate": 0.9,
                        "base_rate": 0.0, "baked_rate": 0.4},
          "samples": [{"question": "Q?", "teacher": {"answer": "Oui.", "language": "fr"},
                       "base": {"answer": "Yes.", "language": "en"}, "baked": {"answer": "Oui.", "language": "fr"}}]}


def evaluation(step: int) -> str:
    return f"{BAKE}/checkpoints/{step}/evaluation"


async def call(client, method, path, headers):
    r = await client.request(method, path, headers=headers)
    return r.status, await r.json()


@pytest.fixture
async def baked(repo, alice, paths: DataPaths):  # noqa: F811
    """Bake b1, complete, with checkpoints 2 and 4 and its own evaluation (eval.json) of checkpoint 4."""
    await create(repo, alice, "b1", overrides=FRENCH)
    return fake_bake_job(paths, "alice", "r1", "b1", evaluation=EVALUATION)


async def test_asking_queues_one_request_and_reports_it(repo, alice, baked) -> None:  # noqa: F811
    assert await call(repo, "GET", evaluation(2), alice) == (200, {
        "bake_name": "b1", "checkpoint": 2, "status": "not_started", "error": None, "note": None,
        "requested_at": None, "finished_at": None, "evaluation": None})
    status, body = await call(repo, "POST", evaluation(2), alice)
    assert status == 202 and body["status"] == "pending" and body["evaluation"] is None
    assert body["note"] == NO_RUNNER  # nothing runs jobs on this data directory
    request = bakefiles.evaluation_file(baked, 2, "request.json")
    written = request.read_bytes()
    assert orjson.loads(written)["checkpoint"] == 2 and orjson.loads(written)["job_id"] == 7
    # asked again, or while it runs: the same request, nothing new
    again = await call(repo, "POST", evaluation(2), alice)
    assert again == (202, body) and request.read_bytes() == written
    with FileLock.acquire(bakefiles.evaluation_file(baked, 2, "lock"), blocking=False):  # an evaluator holds it
        status, body = await call(repo, "POST", evaluation(2), alice)
        assert (status, body["status"], body["note"]) == (202, "running", None)
        assert (await call(repo, "GET", evaluation(2), alice))[1]["status"] == "running"
    assert request.read_bytes() == written


async def test_a_stored_evaluation_is_answered_and_never_asked_for_again(repo, alice, baked) -> None:  # noqa: F811
    await call(repo, "POST", evaluation(2), alice)
    bakefiles.store_evaluation(baked, 2, RESULT)
    bakefiles.end_evaluation_request(baked, 2)
    status, body = await call(repo, "GET", evaluation(2), alice)
    assert status == 200 and body["status"] == "complete" and body["requested_at"] and body["finished_at"]
    assert {k: body["evaluation"][k] for k in RESULT} == RESULT  # the shape of eval.json
    assert await call(repo, "POST", evaluation(2), alice) == (200, body)
    assert not bakefiles.evaluation_file(baked, 2, "request.json").exists()


async def test_the_final_checkpoint_is_answered_by_the_bakes_own_evaluation(repo, alice, baked) -> None:  # noqa: F811
    status, body = await call(repo, "POST", evaluation(4), alice)
    assert status == 200 and body["status"] == "complete" and body["evaluation"] == EVALUATION
    assert not (baked / bakefiles.EVALS).exists()  # nothing asked for, nothing to run


async def test_a_failure_is_reported_and_asking_again_retries(repo, alice, baked) -> None:  # noqa: F811
    await call(repo, "POST", evaluation(2), alice)
    bakefiles.end_evaluation_request(baked, 2, "the evaluation of checkpoint 2 failed (exit status 1); the end of "
                                               "its log: evaluation failed: out of memory")
    status, body = await call(repo, "GET", evaluation(2), alice)
    assert status == 200 and body["status"] == "failed" and body["error"].endswith("out of memory")
    status, body = await call(repo, "POST", evaluation(2), alice)
    assert status == 202 and body["status"] == "pending" and body["error"] is None


async def test_a_running_bake_can_be_asked_about_its_published_checkpoints(repo, alice, paths) -> None:  # noqa: F811
    await create(repo, alice, "live", overrides=FRENCH)
    job_dir = fake_bake_job(paths, "alice", "r1", "live", status="running", steps=(2,), plan={"total_steps": 8})
    status, body = await call(repo, "POST", "/v1/repo/r1/bakes/live/checkpoints/2/evaluation", alice)
    assert status == 202 and body["status"] == "pending"
    assert bakefiles.evaluation_file(job_dir, 2, "request.json").is_file()
    status, body = await call(repo, "POST", "/v1/repo/r1/bakes/live/checkpoints/4/evaluation", alice)
    assert status == 404 and body["message"] == "bake 'live' has no checkpoint 4; its checkpoints: 2"


async def test_what_does_not_exist_is_404_and_a_bad_step_422(repo, alice, master_headers, baked) -> None:  # noqa: F811
    await create(repo, alice, "fresh", overrides=FRENCH)  # never run: no checkpoint
    for method in ("GET", "POST"):
        for path, message in (("/v1/repo/nope/bakes/b1/checkpoints/2/evaluation", "repo 'nope' not found"),
                              ("/v1/repo/r1/bakes/nope/checkpoints/2/evaluation", "bake 'nope' not found in repo 'r1'"),
                              (evaluation(3), "bake 'b1' has no checkpoint 3; its checkpoints: 2, 4"),
                              ("/v1/repo/r1/bakes/fresh/checkpoints/0/evaluation",
                               "bake 'fresh' has no checkpoint 0; it has none yet")):
            assert await call(repo, method, path, alice) == (404, {"message": message, "code": "RESOURCE_NOT_FOUND"})
        for bad in ("x", "-1", "1.5", "9" * 30):
            status, body = await call(repo, method, f"{BAKE}/checkpoints/{bad}/evaluation", alice)
            assert status == 422 and body["code"] == "VALIDATION_ERROR", body
            assert body["detail"][0]["loc"] == ["path", "checkpoint"]
        bob = {**master_headers, "X-User-Id": "bob"}
        assert (await call(repo, method, evaluation(2), bob))[0] == 404
        assert (await repo.request(method, evaluation(2))).status == 401
    assert not (baked / bakefiles.EVALS).exists()


# -- the viewer ----------------------------------------------------------------------------------------------
async def test_the_viewer_reads_a_checkpoints_evaluation(repo, alice, baked) -> None:  # noqa: F811
    status, body = await call(repo, "GET", BAKE + "/evaluation", alice)
    assert status == 200 and body["after"] == EVALUATION and body["evaluations"] == {"4": "complete"}
    await call(repo, "POST", evaluation(2), alice)
    status, body = await call(repo, "GET", BAKE + "/evaluation?checkpoint=2", alice)
    assert status == 200 and body["after"] is None and body["evaluations"] == {"2": "pending", "4": "complete"}
    assert (body["checkpoint"], body["status"], body["note"]) == (2, "pending", NO_RUNNER)
    bakefiles.store_evaluation(baked, 2, RESULT)
    body = (await call(repo, "GET", BAKE + "/evaluation?checkpoint=2", alice))[1]
    assert body["status"] == "complete" and body["after"]["samples"] == RESULT["samples"]
    body = (await call(repo, "GET", BAKE + "/evaluation?checkpoint=4", alice))[1]
    assert body["status"] == "complete" and body["after"] == EVALUATION
    assert (await call(repo, "GET", BAKE + "/evaluation?checkpoint=3", alice))[0] == 404
    assert (await call(repo, "GET", BAKE + "/evaluation?checkpoint=x", alice))[0] == 422


async def test_the_viewer_asks_with_its_cookie_from_its_own_pages(repo, alice, baked) -> None:  # noqa: F811
    r = await repo.post("/ui/session", json={"key": MASTER_KEY, "user": "alice"})
    cookies = {COOKIE_NAME: r.cookies[COOKIE_NAME].value}
    repo.session.cookie_jar.clear()
    path = "/ui/repo/r1/bakes/b1/checkpoints/2/evaluation"
    # the API's own write route does not take the cookie: it wants a key
    r = await repo.post(evaluation(2), json={}, cookies=cookies)
    assert r.status == 401
    # nor does the viewer's route take anything but a signed-in JSON request from its own pages
    assert (await repo.post(path, json={})).status == 401
    r = await repo.post(path, json={}, cookies=cookies, headers={"Origin": "https://evil.example"})
    assert r.status == 403
    r = await repo.post(path, data="x", cookies=cookies)
    assert r.status == 400
    assert not (baked / bakefiles.EVALS).exists()
    r = await repo.post(path, json={}, cookies=cookies, headers={"Origin": str(repo.make_url("/")).rstrip("/")})
    body = await r.json()
    assert r.status == 202 and body["status"] == "pending" and body["bake_name"] == "b1"
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert bakefiles.evaluation_file(baked, 2, "request.json").is_file()
    r = await repo.post("/ui/repo/r1/bakes/b1/checkpoints/4/evaluation", json={}, cookies=cookies)
    assert r.status == 200 and (await r.json())["evaluation"] == EVALUATION
    r = await repo.post("/ui/repo/r1/bakes/b1/checkpoints/3/evaluation", json={}, cookies=cookies)
    assert r.status == 404
    # the cookie reads the checkpoint's state through the viewer's evaluation read
    r = await repo.get(BAKE + "/evaluation?checkpoint=2", cookies=cookies)
    assert r.status == 200 and (await r.json())["status"] == "pending"
