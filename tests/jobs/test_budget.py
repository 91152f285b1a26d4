"""A target's budget, ``max_cost_usd`` (``jobs.budget``): the rollout stops before its cost could pass it,
keeps what it paid for, and resumes when the budget is raised."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from stimserver.config import Settings
from stimserver.jobs import ConfigProblem, JobRef
from stimserver.jobs.budget import Budget, BudgetExhausted, worst_case_usd
from stimserver.llm import Usage
from stimserver.llm.prices import ModelPrice, shipped_prices
from stimserver.llm.providers import client_factory
from stimserver.store.atomic import write_json_atomic
from tests.llm.fake_providers import Reply

from .conftest import hardcoded, lines_of, record_of, seed_target, wait_until

CLAUDE = "claude-sonnet-4-5"
STIM = JobRef("alice", "r1", "t1", "stim")
ROLLOUT = JobRef("alice", "r1", "t1", "rollout")


def test_the_worst_case_is_the_prompt_at_two_bytes_a_token_at_the_dearest_input_price_plus_max_tokens():
    price = ModelPrice(input=3.0, output=15.0, cache_read=0.3, cache_write_5m=3.75, cache_write_1h=6.0,
                       batch_discount=0.5)
    assert worst_case_usd(price, 1000, 100) == pytest.approx((500 * 6.0 + 100 * 15.0) / 1e6)
    assert worst_case_usd(price, 1000, 100, batch=True) == pytest.approx((500 * 6.0 + 100 * 15.0) / 2e6)
    assert worst_case_usd(ModelPrice(input=1.0, output=2.0), 3, None) == pytest.approx((2 + 4096 * 2) / 1e6)


async def test_a_request_that_cannot_fit_waits_for_those_in_flight_then_stops_the_job():
    usage = Usage()
    budget = Budget(1.0, usage, shipped_prices())
    entered = asyncio.Event()
    release = asyncio.Event()

    async def first():
        async with budget.spending(0.6):
            entered.set()
            await release.wait()
            usage.cost_usd += 0.1  # it cost less than its worst case

    async def second():
        async with budget.spending(0.6):  # does not fit beside the first's reserve: waits for it
            usage.cost_usd += 0.1

    task1 = asyncio.ensure_future(first())
    await entered.wait()
    task2 = asyncio.ensure_future(second())
    await asyncio.sleep(0.01)
    assert not task2.done() and budget.reserved == pytest.approx(0.6)
    release.set()
    await asyncio.gather(task1, task2)  # after the first ended at 0.1, 0.6 fitted
    assert usage.cost_usd == pytest.approx(0.2) and budget.reserved == 0
    with pytest.raises(BudgetExhausted, match=r"max_cost_usd \$1: \$0\.2000 spent"):
        async with budget.spending(0.81):
            pass


async def ended(paths, ref):
    return await wait_until(lambda: (r := record_of(paths, ref)) and r["status"] in ("complete", "failed") and r,
                            f"the {ref.kind} job to end")


def raise_budget(paths, target: dict, usd: float) -> dict:
    """What POST …/targets with a new max_cost_usd does to the record (tests/handlers/test_targets.py)."""
    target = {**target, "config": {**target["config"], "max_cost_usd": usd}}
    write_json_atomic(paths.target("alice", "r1", "t1") / "target.json", target)
    return target


# A request's worst case is ~0.00066 USD here (a batched one half that); its real cost 0.000087.
@pytest.mark.parametrize("batch, limit", [(False, 0.001), (True, 0.0005)], ids=["one-by-one", "batch"])
async def test_the_rollout_stops_before_the_budget_keeps_its_lines_and_resumes_when_raised(
        make_runner, paths, anthropic_server, use, batch, limit):
    use(anthropic_server, STIMSERVER_BATCH_POLL_SECONDS="0.02", STIMSERVER_BATCH_SIZE="3")
    anthropic_server.batch_step_seconds = 0.0
    anthropic_server.default = lambda body: Reply("a short answer here")
    runner = await make_runner(llm_factory=client_factory(Settings.from_env()))
    target = seed_target(paths, [hardcoded(10)], model_name=CLAUDE, max_tokens=20, max_concurrency=2,
                         batch=batch, max_cost_usd=limit)
    await runner.submit(STIM, target)
    assert (await ended(paths, STIM))["status"] == "complete"
    await runner.submit(ROLLOUT, target)
    record = await ended(paths, ROLLOUT)
    assert record["status"] == "failed"
    assert f"stopped before the cost could pass max_cost_usd ${limit:g}" in record["error"]
    assert "POST /v1/repo/r1/targets/t1/rollout" in record["error"]  # how to resume
    usage = orjson.loads((ROLLOUT.job_dir(paths) / "usage.json").read_bytes())
    assert 0 < usage["cost_usd"] <= limit
    kept = lines_of(paths, ROLLOUT)
    assert 0 < len(kept) < 10 and all(line["response"] for line in kept)
    asked = usage["requests"]

    target = raise_budget(paths, target, 1.0)
    await runner.submit(ROLLOUT, target)
    record = await ended(paths, ROLLOUT)
    assert record["status"] == "complete", record["error"]
    assert record["config"]["max_cost_usd"] == 1.0 and record["spec"]["max_cost_usd"] == 1.0
    assert lines_of(paths, ROLLOUT)[:len(kept)] == kept
    usage = orjson.loads((ROLLOUT.job_dir(paths) / "usage.json").read_bytes())
    assert usage["requests"] == 10 and asked < 10  # nothing paid for was asked again
    sent = len(anthropic_server.batch_received) if batch else len(anthropic_server.received)
    assert sent == 10


async def test_a_budget_needs_a_price(make_runner, paths):
    runner = await make_runner()
    target = seed_target(paths, [hardcoded(1)], model_name="my-local-model", max_cost_usd=1.0)
    write_json_atomic(STIM.job_dir(paths) / "job.json", {"status": "complete", "job_id": 1, "kind": "stim"})
    with pytest.raises(ConfigProblem, match="max_cost_usd needs a price for model 'my-local-model'"):
        await runner.submit(ROLLOUT, target)


async def test_a_stim_jobs_question_writing_keeps_to_the_budget_too(make_runner, paths, anthropic_server, use):
    from .conftest import numbered_answer

    use(anthropic_server)
    anthropic_server.default = lambda body: numbered_answer(body["messages"][-1]["content"])
    gen = {"type": "oneshot_qs", "model": CLAUDE, "numq": 120, "max_tokens": 400}
    runner = await make_runner(llm_factory=client_factory(Settings.from_env()))
    # three requests of 50 questions; each could cost up to ~0.0105 USD and costs ~0.0035: one fits
    target = seed_target(paths, [gen], max_cost_usd=0.012, max_concurrency=2)
    await runner.submit(STIM, target)
    record = await ended(paths, STIM)
    assert record["status"] == "failed", record
    assert record["error"].startswith("generators[0] (oneshot_qs): stopped before the cost could pass max_cost_usd")
    assert "POST /v1/repo/r1/targets/t1/stim" in record["error"]
    usage = orjson.loads((STIM.job_dir(paths) / "usage.json").read_bytes())
    assert 0 < usage["cost_usd"] <= 0.012
    asked = len(anthropic_server.received)
    kept = lines_of(paths, STIM)
    target = {**target, "config": {**target["config"], "max_cost_usd": 5.0}}
    write_json_atomic(paths.target("alice", "r1", "t1") / "target.json", target)
    await runner.submit(STIM, target)
    record = await ended(paths, STIM)
    assert record["status"] == "complete", record["error"]
    assert lines_of(paths, STIM)[:len(kept)] == kept and len(lines_of(paths, STIM)) == 120
    usage = orjson.loads((STIM.job_dir(paths) / "usage.json").read_bytes())
    assert usage["requests"] == len(anthropic_server.received) > asked  # the answers logged were not asked again
