"""The rollout routes over HTTP: answers before any job, 409s while one runs, and deleting a target mid-rollout."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from stimserver.config import Settings
from stimserver.web.app import create_app
from tests.conftest import MASTER_KEY
from tests.jobs.conftest import hardcoded, record_of, seed_target, wait_until
from tests.llm.fake_providers import Slow, openai_server  # noqa: F401  (fixture)

BASE = "/v1/repo/r1/targets/t1"
ALICE = {"Authorization": f"Bearer {MASTER_KEY}", "X-User-Id": "alice"}


@pytest.fixture
def settings(tmp_path, openai_server):  # noqa: F811
    return Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False,
                          openai_base_url=f"{openai_server.url}/v1", openai_api_key=openai_server.api_key,
                          llm_max_retries=0)


async def body_of(client: TestClient, method: str, path: str, status: int = 200) -> dict:
    r = await client.request(method, path, headers=ALICE)
    body = await r.json()
    assert r.status == status, body
    return body


async def test_before_any_rollout_every_field_is_there(client, paths):
    seed_target(paths, [hardcoded(2)], model_name="m")
    expected = {"status": "not_started", "lines": None, "config": None, "error": None, "job_id": None,
                "progress_percent": None, "usage": None, "total_expected": None, "failed_trajectories": None,
                "stim_outdated": None, "duplicate_stimuli": None, "warning": None}
    assert await body_of(client, "GET", BASE + "/rollout") == expected
    page = await body_of(client, "GET", BASE + "/rollout/output")
    assert page == {**expected, "output": [], "offset": 0, "limit": 100, "has_more": False}
    assert await body_of(client, "DELETE", BASE + "/rollout/output") == expected
    assert (await body_of(client, "POST", BASE + "/rollout", 400))["message"].startswith(
        "Stim job must complete before running rollout")
    assert (await body_of(client, "GET", "/v1/repo/r1/targets/nope/rollout", 404))["message"]


async def _running_rollout(client, paths, openai_server) -> None:  # noqa: F811
    openai_server.default = lambda body: Slow(0.2, "slow answer")
    seed_target(paths, [hardcoded(200)], model_name="m", max_concurrency=4)
    await body_of(client, "POST", BASE + "/stim")
    await wait_until(lambda: (record_of(paths, _ref("stim")) or {}).get("status") == "complete", "the stim job")
    await body_of(client, "POST", BASE + "/rollout")
    await wait_until(lambda: len(openai_server.received) >= 4, "rollout requests")


def _ref(kind):
    from stimserver.jobs import JobRef

    return JobRef("alice", "r1", "t1", kind)


async def test_a_running_rollout_keeps_its_output_and_deleting_the_target_stops_it(client, paths,
                                                                                  openai_server):  # noqa: F811
    await _running_rollout(client, paths, openai_server)
    busy = await body_of(client, "DELETE", BASE + "/rollout/output", 409)
    assert busy["message"].startswith("the rollout job of target 't1' is ")
    status = await body_of(client, "GET", BASE + "/rollout")
    assert status["status"] in ("pending", "running") and status["total_expected"] == 200
    deleted = await body_of(client, "DELETE", BASE)
    assert deleted == {"message": "Target 't1' deleted successfully"}
    asked = len(openai_server.received)
    await asyncio.sleep(0.5)  # a rollout still running would keep asking (4 at a time, 0.2 s each)
    assert len(openai_server.received) == asked
    assert not paths.target("alice", "r1", "t1").exists()
    await body_of(client, "GET", BASE + "/rollout", 404)


async def test_a_stopped_server_hands_a_rollout_back(aiohttp_client, settings, paths, openai_server):  # noqa: F811
    client = await aiohttp_client(create_app(settings))
    await _running_rollout(client, paths, openai_server)
    await client.close()  # shutdown: the job goes back to pending for the next runner
    assert record_of(paths, _ref("rollout"))["status"] == "pending"
