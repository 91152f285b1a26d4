"""POST …/stim and the status/output endpoints while jobs run (API.md §9, §10.1, §11)."""
from __future__ import annotations

import random

import pytest

from stimserver.app import create_app
from stimserver.config import Settings
from stimserver.handlers import jobs as jobs_handlers
from stimserver.keys import JOB_CONTROL

from .conftest import hardcoded, seed_target, wait_until
from .test_runner import GateKind

STIM = "/v1/repo/r1/targets/t1/stim"
FIELDS = {"status", "lines", "config", "error", "job_id", "progress_percent"}


async def call(client, method, path, headers):
    r = await client.request(method, path, headers=headers)
    assert r.content_type == "application/json"
    return r.status, await r.json()


async def status_of(client, alice, want):
    async def check():
        _, body = await call(client, "GET", STIM, alice)
        return body if body["status"] == want else None
    return await wait_until(check, f"status {want}")


@pytest.fixture
def gate(client):
    kind = GateKind(0)
    client.app[JOB_CONTROL].kinds["stim"] = kind
    return kind


async def test_post_answers_complete_for_a_quick_job(client, alice, paths, monkeypatch):
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 60.0)
    seed_target(paths, [hardcoded(3), {"type": "from_dataset", "dataset": "arithmetic", "numq": 20}])
    status, body = await call(client, "POST", STIM, alice)
    assert status == 200 and set(body) == FIELDS
    assert body["status"] == "complete" and body["lines"] == 23 and body["progress_percent"] == 100.0
    assert isinstance(body["job_id"], int) and body["error"] is None
    assert body["config"]["generators"][0]["type"] == "hardcoded"
    _, page = await call(client, "GET", STIM + "/output?limit=100", alice)
    assert [line["stimulus_id"] for line in page["output"]] == list(range(23))
    assert page["output"][5]["type"] == "from_dataset" and page["has_more"] is False


async def test_post_is_idempotent_while_a_job_exists(client, alice, paths, gate, monkeypatch):
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 0.0)
    gate.total = 40
    seed_target(paths, [hardcoded(1)])
    _, first = await call(client, "POST", STIM, alice)
    assert first["status"] in ("pending", "running") and first["job_id"]
    running = await status_of(client, alice, "running")
    _, again = await call(client, "POST", STIM, alice)
    assert again["job_id"] == first["job_id"] and again["status"] == "running"
    assert running["progress_percent"] == 0.0 and running["lines"] == 0
    gate.release(40)
    done = await status_of(client, alice, "complete")
    _, after = await call(client, "POST", STIM, alice)
    assert after == done and after["job_id"] == first["job_id"]


async def test_post_after_a_failure_starts_a_new_job(client, alice, paths, gate, monkeypatch):
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 0.0)
    gate.total, gate.fail_at = 10, 6
    seed_target(paths, [hardcoded(1)])
    _, first = await call(client, "POST", STIM, alice)
    gate.release(10)
    failed = await status_of(client, alice, "failed")
    assert failed["lines"] == 6 and "internal error" in failed["error"]
    _, page = await call(client, "GET", STIM + "/output", alice)  # committed lines stay readable
    assert [line["stimulus_id"] for line in page["output"]] == list(range(6))
    gate.fail_at = None
    _, second = await call(client, "POST", STIM, alice)
    assert second["job_id"] > first["job_id"] and second["status"] in ("pending", "running", "complete")
    assert (await status_of(client, alice, "complete"))["lines"] == 10


MISSING = {
    "no-generators": dict(generators=[]),
    "no-teacher": dict(generators=[hardcoded(1)], teacher=None),
}


@pytest.mark.parametrize("target", MISSING.values(), ids=MISSING.keys())
async def test_post_without_stim_configuration_is_400(client, alice, paths, target):
    seed_target(paths, **target)
    status, body = await call(client, "POST", STIM, alice)
    assert status == 400 and body["code"] == "INVALID_INPUT"
    assert body["message"].startswith("Target must have generators and teacher prompt configured")
    assert (await call(client, "GET", STIM, alice))[1]["status"] == "not_started"


async def test_post_with_an_unusable_generator_is_400_naming_it(client, alice, paths):
    seed_target(paths, [hardcoded(1), {"type": "from_dataset", "dataset": "nope", "numq": 3}])
    status, body = await call(client, "POST", STIM, alice)
    assert status == 400 and "generators[1] (from_dataset): unknown dataset 'nope'" in body["message"]


@pytest.mark.parametrize("path", ["/v1/repo/r1/targets/nope/stim", "/v1/repo/nope/targets/t1/stim"],
                         ids=["target", "repo"])
async def test_post_to_an_unknown_target_is_404(client, alice, paths, path):
    seed_target(paths, [hardcoded(1)])
    status, body = await call(client, "POST", path, alice)
    assert status == 404 and "nope" in body["message"]


async def test_post_ignores_a_body_and_needs_no_content_type(client, alice, paths):
    seed_target(paths, [hardcoded(2)])
    r = await client.post(STIM, headers={**alice, "Content-Type": "application/json"}, data=b"")
    assert r.status == 200


async def test_pages_stay_consistent_while_the_job_appends(client, alice, paths, gate):
    gate.total = 1500
    seed_target(paths, [hardcoded(1)])
    await call(client, "POST", STIM, alice)
    rng = random.Random(5)
    last_lines, released = 0, 0
    while True:
        if released < gate.total:
            step = min(rng.choice([1, 7, 50, 133, 260]), gate.total - released)
            gate.release(step)
            released += step
        for _ in range(4):  # pages taken while the writer may be between its appends
            limit = rng.choice([1, 10, 100, 1000])
            offset = rng.randrange(0, max(released, 1) + 20)
            status, body = await call(client, "GET", f"{STIM}/output?offset={offset}&limit={limit}", alice)
            assert status == 200
            lines = body["lines"]
            assert last_lines <= lines <= released and body["status"] in ("pending", "running", "complete")
            assert body["status"] != "pending" or lines == 0  # pending: claimed a moment later
            expect = list(range(offset, min(offset + limit, lines)))
            assert [line["stimulus_id"] for line in body["output"]] == expect
            assert all(line["pad"] == "x" * (line["stimulus_id"] % 37) for line in body["output"])
            assert body["has_more"] is (offset + len(expect) < lines)
            assert body["progress_percent"] == (100.0 if body["status"] == "complete"
                                                else round(lines / gate.total * 100, 2))
            last_lines = lines
        if last_lines == gate.total:
            break
    final = await status_of(client, alice, "complete")
    assert final["lines"] == 1500 and final["progress_percent"] == 100.0


class TestWebTierWithoutRunner:
    @pytest.fixture
    def settings(self, tmp_path):
        from tests.conftest import MASTER_KEY
        return Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False,
                              run_jobs=False, job_orphan_seconds=0)

    async def test_a_job_nobody_runs_fails_after_the_bound(self, client, alice, paths):
        seed_target(paths, [hardcoded(2)])
        _, queued = await call(client, "POST", STIM, alice)
        assert queued["status"] == "pending" and queued["job_id"]
        _, body = await call(client, "GET", STIM, alice)
        assert body["status"] == "failed" and "no job runner took this job up within 0 s" in body["error"]

    async def test_a_worker_elsewhere_runs_it(self, client, alice, paths, make_runner):
        seed_target(paths, [hardcoded(30)])
        await call(client, "POST", STIM, alice)
        await make_runner()  # e.g. `stimserver worker` on the same data directory
        assert (await status_of(client, alice, "complete"))["lines"] == 30


async def test_output_of_other_targets_is_served_while_a_job_fails(client, alice, paths, make_job, gate):
    gate.total, gate.fail_at = 3, 0
    seed_target(paths, [hardcoded(1)])
    make_job(lines=4, user="alice", repo="r1", target="other")
    await call(client, "POST", STIM, alice)
    gate.release(3)
    failed = await status_of(client, alice, "failed")
    assert failed["lines"] == 0 and "Traceback" not in failed["error"]
    _, body = await call(client, "GET", "/v1/repo/r1/targets/other/stim/output", alice)
    assert body["lines"] == 4 and body["status"] == "complete"
    assert (await call(client, "GET", "/v1/health", {}))[0] == 200


def test_the_runner_is_registered_only_when_jobs_run(settings):
    assert list(create_app(settings).cleanup_ctx)  # run_jobs defaults to on
    app = create_app(Settings.build(data_dir=settings.data_dir, master_key=settings.master_key, run_jobs=False))
    assert not list(app.cleanup_ctx)
    assert app[JOB_CONTROL].active is False  # still there: it submits jobs and stops them for deletes
