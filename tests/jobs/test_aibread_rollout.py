"""The official `aibread` client's rollout calls against a real stimserver and a fake OpenAI-compatible server."""
from __future__ import annotations

import time

import aibread
import pytest

from stimserver.config import Settings
from stimserver.handlers import jobs as jobs_handlers
from tests.conftest import MASTER_KEY
from tests.llm.fake_providers import Fail, Reply, openai_thread  # noqa: F401  (fixture)

from .conftest import hardcoded, seed_target

MODEL = "Qwen/Qwen3-32B"


@pytest.fixture
def settings(tmp_path, openai_thread):  # noqa: F811
    """The server's settings, pointed at the fake provider."""
    return Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False,
                          openai_base_url=f"{openai_thread.url}/v1", llm_max_retries=0, batch_poll_seconds=0.05)


@pytest.fixture
def provider(openai_thread):  # noqa: F811
    openai_thread.default = lambda body: Reply(f"Answer to {body['messages'][-1]['content']}")
    return openai_thread


def wait_complete(get, **kwargs):
    deadline = time.monotonic() + 60
    while (status := get("t1", repo_name="r1", **kwargs)).status != "complete":
        assert status.status in ("pending", "running"), status
        assert time.monotonic() < deadline, "the job did not complete"
        time.sleep(0.05)
    return status


@pytest.fixture
def quick(monkeypatch, bread):
    """POST waits long enough for these small jobs; the client must never reach its 30 s sleep."""
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 60.0)
    for resource in (bread.targets.stim, bread.targets.rollout):
        monkeypatch.setattr(resource, "_sleep", lambda seconds: pytest.fail("the client had to poll"))
    return bread


def test_a_quick_rollout_returns_complete_from_a_polling_run(quick, paths, provider):
    seed_target(paths, [hardcoded(4)], user="admin", model_name=MODEL, num_traj_per_stimulus=2)
    stim = quick.targets.stim.run("t1", repo_name="r1")
    result = quick.targets.rollout.run("t1", repo_name="r1")  # poll=True, the default
    assert result.status == "complete" and result.lines == 8 and result.total_expected == 8, result
    assert result.progress_percent == 100.0 and result.error is None
    extra = result.model_extra or {}
    assert extra["failed_trajectories"] == 0 and extra["stim_outdated"] is False
    assert result.config == {"model_name": MODEL, "num_traj_per_stimulus": 2, "temperature": 1.0, "max_tokens": None,
                             "max_concurrency": 10, "extra_kwargs": {}, "batch": False, "max_cost_usd": None,
                             "stim_job_id": stim.job_id}
    assert len(provider.received) == 8


def test_run_without_polling_then_page_every_trajectory(bread, paths, provider):
    seed_target(paths, [hardcoded(37)], user="admin", model_name=MODEL, num_traj_per_stimulus=3, max_concurrency=4)
    bread.targets.stim.run("t1", repo_name="r1", poll=False)
    wait_complete(bread.targets.stim.get)
    started = bread.targets.rollout.run("t1", repo_name="r1", poll=False)
    assert started.status in ("pending", "running", "complete") and isinstance(started.job_id, int)
    assert started.total_expected == 111
    status = wait_complete(bread.targets.rollout.get)
    assert status.lines == 111 and status.job_id == started.job_id
    rows, offset = [], 0
    while True:
        page = bread.targets.rollout.get_output("t1", repo_name="r1", offset=offset, limit=25)
        assert page.lines == 111 and page.status == "complete" and page.total_expected == 111
        rows += page.output
        offset += 25
        if not page.has_more:
            break
    assert [(r["stimulus_id"], r["trajectory_id"]) for r in rows] == [(s, t) for s in range(37) for t in range(3)]
    assert rows[5]["response"]["content"] == "Answer to Q1?" and rows[5]["stimulus"] == "Q1?"
    assert rows[5]["tokens"] == rows[5]["response"]["usage"]["total_tokens"] > 0
    assert provider.max_in_flight <= 4
    again = bread.targets.rollout.run("t1", repo_name="r1", poll=False)
    assert (again.status, again.job_id) == ("complete", started.job_id)  # idempotent
    assert len(provider.received) == 111


@pytest.mark.parametrize("style", ["user_id", "x_user_id"])
def test_the_master_key_acts_for_a_user_either_way(quick, paths, provider, style):
    seed_target(paths, [hardcoded(3)], user="alice", model_name=MODEL)
    who = {style: "alice"}
    assert quick.targets.rollout.get("t1", repo_name="r1", **who).status == "not_started"
    quick.targets.stim.run("t1", repo_name="r1", **who)
    result = quick.targets.rollout.run("t1", repo_name="r1", **who)
    assert result.status == "complete" and result.lines == 3
    page = quick.targets.rollout.get_output("t1", repo_name="r1", limit=2, **who)
    assert [r["stimulus_id"] for r in page.output] == [0, 1] and page.has_more
    with pytest.raises(aibread.NotFoundError):  # the master user has no such target
        quick.targets.rollout.get("t1", repo_name="r1")


def test_prerequisites_are_bad_requests(bread, paths, provider):
    seed_target(paths, [hardcoded(2)], user="admin", model_name=MODEL)
    with pytest.raises(aibread.BadRequestError, match="Stim job must complete before running rollout"):
        bread.targets.rollout.run("t1", repo_name="r1", poll=False)
    seed_target(paths, [hardcoded(2)], user="admin", target="t2")  # no model_name
    bread.targets.stim.run("t2", repo_name="r1", poll=False)
    wait_complete(lambda name, **kw: bread.targets.stim.get("t2", **kw))
    with pytest.raises(aibread.BadRequestError, match="model_name must be configured in target"):
        bread.targets.rollout.run("t2", repo_name="r1", poll=False)
    with pytest.raises(aibread.NotFoundError):
        bread.targets.rollout.run("nope", repo_name="r1", poll=False)
    assert provider.received == []


def test_rejected_trajectories_are_counted_and_the_job_completes(quick, paths, provider):
    provider.default = lambda body: (Fail(400, "context length exceeded") if body["messages"][-1]["content"] == "Q2?"
                                     else Reply("fine"))
    seed_target(paths, [hardcoded(5)], user="admin", model_name=MODEL, num_traj_per_stimulus=2)
    quick.targets.stim.run("t1", repo_name="r1")
    result = quick.targets.rollout.run("t1", repo_name="r1")
    assert result.status == "complete" and result.lines == 10
    assert (result.model_extra or {})["failed_trajectories"] == 2
    page = quick.targets.rollout.get_output("t1", repo_name="r1", offset=4, limit=2)
    assert [r["response"] for r in page.output] == [None, None]
    assert all("context length exceeded" in r["error"] for r in page.output)
    assert (page.model_extra or {})["failed_trajectories"] == 2


def test_a_re_run_stim_is_flagged_and_never_mixed_in(quick, paths, provider):
    seed_target(paths, [hardcoded(3)], user="admin", model_name=MODEL)
    first = quick.targets.stim.run("t1", repo_name="r1")
    rollout = quick.targets.rollout.run("t1", repo_name="r1")
    assert rollout.status == "complete"
    quick.delete("/v1/repo/r1/targets/t1/stim/output", cast_to=object)
    seed_target(paths, [hardcoded(4, prefix="New")], user="admin", model_name=MODEL)  # what the stim job reads now
    second = quick.targets.stim.run("t1", repo_name="r1")
    assert second.status == "complete" and second.job_id != first.job_id and second.lines == 4
    status = quick.targets.rollout.get("t1", repo_name="r1")
    assert (status.model_extra or {})["stim_outdated"] is True and status.config["stim_job_id"] == first.job_id
    again = quick.targets.rollout.run("t1", repo_name="r1")  # answers the complete job as it is
    assert (again.job_id, again.lines, again.status) == (rollout.job_id, 3, "complete")
    assert [r["question"] for r in quick.targets.rollout.get_output("t1", repo_name="r1").output] == [
        "Q0?", "Q1?", "Q2?"]
    quick.delete("/v1/repo/r1/targets/t1/rollout/output", cast_to=object)  # the explicit fresh start
    fresh = quick.targets.rollout.run("t1", repo_name="r1")
    assert fresh.job_id != rollout.job_id and fresh.lines == 4 and fresh.config["stim_job_id"] == second.job_id
    assert (fresh.model_extra or {})["stim_outdated"] is False
    assert [r["question"] for r in quick.targets.rollout.get_output("t1", repo_name="r1").output] == [
        "New0?", "New1?", "New2?", "New3?"]


async def test_the_async_client_runs_and_pages_a_rollout(bread_server, paths, provider, monkeypatch):
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 60.0)
    seed_target(paths, [hardcoded(6)], user="admin", model_name=MODEL, num_traj_per_stimulus=2)
    async with aibread.AsyncBread(api_key=MASTER_KEY, base_url=bread_server.base_url, max_retries=0) as bread:
        async def no_sleep(seconds):
            pytest.fail("the client had to poll")

        monkeypatch.setattr(bread.targets.stim, "_sleep", no_sleep)
        monkeypatch.setattr(bread.targets.rollout, "_sleep", no_sleep)
        assert (await bread.targets.stim.run("t1", repo_name="r1")).status == "complete"
        result = await bread.targets.rollout.run("t1", repo_name="r1")
        assert result.status == "complete" and result.lines == result.total_expected == 12
        page = await bread.targets.rollout.get_output("t1", repo_name="r1", offset=10, limit=5)
    assert [(r["stimulus_id"], r["trajectory_id"]) for r in page.output] == [(5, 0), (5, 1)]
    assert page.has_more is False and page.lines == 12


def test_the_client_passes_batch_mode_and_a_budget_through_and_reads_the_batches(bread, paths, provider):
    # TargetConfigBase is a TypedDict to the client: the run settings travel unchanged, and come back as extras.
    provider.batch_step_seconds = 0.0
    seed_target(paths, [hardcoded(3)], user="admin", model_name="gpt-4o-mini", num_traj_per_stimulus=2)
    made = bread.targets.create("r1", target_name="t2", template="t1",
                                overrides={"batch": True, "max_cost_usd": 2.5})  # type: ignore[typeddict-unknown-key]
    config = made.config.model_dump() if hasattr(made.config, "model_dump") else dict(made.config)
    assert config["batch"] is True and config["max_cost_usd"] == 2.5
    def complete(resource):
        deadline = time.monotonic() + 60
        while (status := resource.get("t2", repo_name="r1")).status != "complete":
            assert status.status in ("pending", "running"), status
            assert time.monotonic() < deadline, "the job did not complete"
            time.sleep(0.05)
        return status

    bread.targets.stim.run("t2", repo_name="r1", poll=False)
    complete(bread.targets.stim)
    bread.targets.rollout.run("t2", repo_name="r1", poll=False)
    status = complete(bread.targets.rollout)
    extra = status.model_extra or {}
    assert status.lines == 6 and extra["batches"]["submitted"] == 1 and extra["batches"]["running"] == 0
    assert status.config["batch"] is True and status.config["max_cost_usd"] == 2.5
    assert 0 < (extra.get("usage") or status.usage)["cost_usd"] <= 2.5
    assert provider.calls.count("POST /v1/batches") == 1 and "POST /v1/chat/completions" not in provider.calls
