"""The LLM engine end to end against the local fake providers (issue 9).

Answers durable per request (kill -9 and SIGTERM resume ask only what was in flight), lines
growing while a job runs, a resumed job byte-identical to one built from the same answers,
one limiter per provider shared by jobs (a 429/529 burst, a provider-wide cap, a provider
that keeps refusing), usage in status and metrics, and cancellation on delete.
"""
from __future__ import annotations

import asyncio
import shutil
import signal

import orjson
import pytest

from stimserver.config import Settings
from stimserver.jobs import JobRef, transitions
from stimserver.jobs.stim import StimKind
from stimserver.llm.prices import shipped_prices
from stimserver.llm.providers import client_factory
from stimserver.store import output
from stimserver.store.answers import answer_log_path
from stimserver.store.datasets import Datasets
from stimserver.web.app import create_app
from tests.conftest import MASTER_KEY
from tests.llm.fake_providers import Fail, FakeAnthropic, FakeProvider, Reply, Slow

from .conftest import lines_of, numbered_answer, record_of, seed_target, wait_until
from .test_worker import workers  # noqa: F401  (fixture)

CLAUDE = "claude-sonnet-4-6"
LOCAL = "llama3.1:8b"
TEMPLATE = "write exactly ${numq} for ${prompt_u}"


@pytest.fixture(params=["anthropic", "openai"])
def server(request: pytest.FixtureRequest) -> FakeProvider:
    fake: FakeProvider = request.getfixturevalue(f"{request.param}_server")
    fake.default = lambda body: numbered_answer(body["messages"][-1]["content"])
    return fake


def model_for(server: FakeProvider) -> str:
    return CLAUDE if isinstance(server, FakeAnthropic) else LOCAL


def env_for(server: FakeProvider, **extra: str) -> dict[str, str]:
    return {**server.env(), "STIMSERVER_LLM_MAX_RETRIES": "3", **extra}


def gen(server: FakeProvider, numq: int) -> dict:
    return {"type": "custom", "model": model_for(server), "numq": numq, "template_content": TEMPLATE}


def logged(paths, ref: JobRef, index: int = 0) -> int:
    path = answer_log_path(ref.job_dir(paths), str(index))
    return path.read_bytes().count(b"\n") if path.exists() else 0


def usage_of(paths, ref: JobRef) -> dict:
    return orjson.loads((ref.job_dir(paths) / "usage.json").read_bytes())


async def queue(paths, ref: JobRef, target_record: dict) -> None:
    """Submit a job with no runner in this process (a worker, or a runner made later, takes it)."""
    await asyncio.to_thread(transitions.submit, paths, StimKind(), ref, target_record, Datasets(paths.root))


def ended(paths, ref):
    record = record_of(paths, ref)
    return record if record and record["status"] in ("complete", "failed") else None


async def start_job(make_runner, paths, server, generators, *, target="t1", env=None, **config):
    ref = JobRef("alice", "r1", target, "stim")
    runner = await make_runner(llm_factory=client_factory(Settings.from_env(env or env_for(server))))
    await runner.submit(ref, seed_target(paths, generators, target=target, **config))
    return runner, ref


async def replayed_output(paths, ref: JobRef, make_runner, tmp_ref: str = "replay") -> bytes:
    """The output a fresh job builds from ``ref``'s answer logs alone, with a model that always fails."""
    copy = JobRef(ref.user, ref.repo, tmp_ref, ref.kind)
    record = seed_target(paths, [], target=tmp_ref)
    record["config"] = orjson.loads((ref.job_dir(paths) / "job.json").read_bytes())["config"]
    await queue(paths, copy, record)
    for path in ref.job_dir(paths).glob("answers-*.jsonl"):
        shutil.copy(path, copy.job_dir(paths) / path.name)

    class Refusing:
        async def complete(self, **kwargs):
            raise AssertionError("a request the answer log holds was sent again")

    await make_runner(llm_factory=Refusing)
    record = await wait_until(lambda: ended(paths, copy), "the replay to finish")
    assert record["status"] == "complete", record["error"]
    return (copy.job_dir(paths) / output.DATA_NAME).read_bytes()


async def test_lines_grow_in_steps_while_the_job_runs(make_runner, paths, server):
    server.latency = 0.1
    _, ref = await start_job(make_runner, paths, server, [gen(server, 1000)], max_concurrency=2)
    seen: set[int] = set()

    def progress():
        seen.add(output.line_count(ref.job_dir(paths)))
        return ended(paths, ref)

    record = await wait_until(progress, "the job to finish")
    assert record["status"] == "complete", record["error"]
    steps = sorted(n for n in seen if 0 < n < 1000)
    assert len(steps) >= 3, steps  # committed as answers arrive, not all at the end
    assert [line["stimulus_id"] for line in lines_of(paths, ref)] == list(range(1000))
    assert len(server.received) == 20 and server.max_in_flight <= 2


async def test_kill_9_asks_again_only_the_requests_in_flight(paths, workers, server, make_runner):  # noqa: F811
    server.latency = 0.1
    ref = JobRef("alice", "r1", "t1", "stim")
    await queue(paths, ref, seed_target(paths, [gen(server, 2000)], max_concurrency=4))
    env = env_for(server)
    first = await workers(env)
    await wait_until(lambda: logged(paths, ref) >= 12, "a dozen answers to be logged")
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    await asyncio.sleep(0.3)  # let requests the dead worker had sent finish arriving
    done_at_kill, asked_at_kill = logged(paths, ref), len(server.received)
    in_flight = asked_at_kill - done_at_kill
    assert 0 <= in_flight <= 4
    assert output.line_count(ref.job_dir(paths)) <= done_at_kill * 50

    await workers(env)
    record = await wait_until(lambda: ended(paths, ref), "the restarted worker to finish", timeout=90)
    assert record["status"] == "complete", record["error"]
    assert [line["stimulus_id"] for line in lines_of(paths, ref)] == list(range(2000))
    assert len(server.received) == 40 + in_flight  # only the requests in flight were asked again
    assert logged(paths, ref) == 40
    # The same answers make the same bytes, whether the job was interrupted or not.
    assert await replayed_output(paths, ref, make_runner) == (ref.job_dir(paths) / output.DATA_NAME).read_bytes()


async def test_sigterm_hands_back_the_job_with_its_answers(make_runner, paths, server):
    server.latency = 0.1
    runner, ref = await start_job(make_runner, paths, server, [gen(server, 500)], max_concurrency=2)
    await wait_until(lambda: logged(paths, ref) >= 3, "three answers to be logged")
    await runner.close()  # what SIGTERM does
    assert record_of(paths, ref)["status"] == "pending"
    done, asked = logged(paths, ref), len(server.received)
    assert 0 <= asked - done <= 2
    await make_runner(llm_factory=client_factory(Settings.from_env(env_for(server))))
    record = await wait_until(lambda: ended(paths, ref), "the next runner to finish")
    assert record["status"] == "complete", record["error"]
    assert len(server.received) == 10 + (asked - done)
    assert usage_of(paths, ref)["requests"] == 10  # usage survived the hand-back; no answer was lost


@pytest.mark.parametrize("server", ["anthropic", "openai"], indirect=True)
async def test_a_rate_limit_burst_slows_every_job_of_the_provider(make_runner, paths, server):
    status = 529 if isinstance(server, FakeAnthropic) else 429
    server.latency = 0.02
    server.fail_every = (5, Fail(status, "slow down", retry_after=0.5))
    client = client_factory(Settings.from_env(env_for(server, STIMSERVER_LLM_MAX_RETRIES="6")))
    runner = await make_runner(llm_factory=client)
    refs = [JobRef("alice", "r1", t, "stim") for t in ("ta", "tb")]
    for ref in refs:
        await runner.submit(ref, seed_target(paths, [gen(server, 400)], target=ref.target, max_concurrency=3))
    for ref in refs:
        record = await wait_until(lambda ref=ref: ended(paths, ref), f"{ref.target} to finish")
        assert record["status"] == "complete", record["error"]
        assert len(lines_of(paths, ref)) == 400
    failures = len(server.received) // 5
    usage = [usage_of(paths, ref) for ref in refs]
    assert sum(u["rate_limited"] for u in usage) == failures >= 2
    assert sum(u["retries"] for u in usage) == failures and sum(u["requests"] for u in usage) == 16
    # After each refusal the provider got nothing new from either job during its retry-after
    # (a small grace for requests already on the wire).
    for k in range(5, len(server.arrivals) + 1, 5):
        refused_at = server.arrivals[k - 1]
        assert not [t for t in server.arrivals if refused_at + 0.1 < t < refused_at + 0.45]


async def test_a_provider_that_keeps_refusing_fails_the_job_saying_so(make_runner, paths, server):
    status = 529 if isinstance(server, FakeAnthropic) else 429
    server.fail_every = (1, Fail(status, "busy", retry_after=0.01))
    _, ref = await start_job(make_runner, paths, server, [gen(server, 10)],
                             env=env_for(server, STIMSERVER_LLM_MAX_RETRIES="2"))
    record = await wait_until(lambda: ended(paths, ref), "the job to fail")
    assert record["status"] == "failed"
    words = "LLM provider overloaded (529)" if status == 529 else "rate limited by the LLM provider (429)"
    assert record["error"] == f"generators[0] (custom): {words} after 2 retries"
    assert len(server.received) == 3
    assert usage_of(paths, ref) == {"requests": 0, "input_tokens": 0, "output_tokens": 0, "retries": 2,
                                    "rate_limited": 3, "cached_input_tokens": 0, "cache_write_tokens": 0,
                                    "cost_usd": 0.0, "price_table": None, "cost_unknown": None}


async def test_the_provider_wide_cap_holds_across_jobs(make_runner, paths, server):
    server.latency = 0.05
    env = env_for(server, STIMSERVER_LLM_MAX_CONCURRENT="3")
    runner = await make_runner(llm_factory=client_factory(Settings.from_env(env)))
    refs = [JobRef("alice", "r1", t, "stim") for t in ("ta", "tb")]
    for ref in refs:
        await runner.submit(ref, seed_target(paths, [gen(server, 500)], target=ref.target, max_concurrency=5))
    for ref in refs:
        record = await wait_until(lambda ref=ref: ended(paths, ref), f"{ref.target} to finish")
        assert record["status"] == "complete", record["error"]
    assert server.max_in_flight == 3 and len(server.received) == 20


async def test_usage_in_status_output_and_metrics(make_runner, paths, server, aiohttp_client, settings):
    _, ref = await start_job(make_runner, paths, server, [gen(server, 120)])
    record = await wait_until(lambda: ended(paths, ref), "the job to finish")
    assert record["status"] == "complete", record["error"]
    client = await aiohttp_client(create_app(Settings.build(data_dir=settings.data_dir, master_key=MASTER_KEY,
                                                            access_log=False, run_jobs=False)))
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "X-User-Id": "alice"}
    status = await (await client.get("/v1/repo/r1/targets/t1/stim", headers=headers)).json()
    usage = status["usage"]
    assert usage["requests"] == 3 and usage["retries"] == 0 and usage["rate_limited"] == 0
    assert usage["cached_input_tokens"] == 0 and usage["cache_write_tokens"] == 0  # the fake's replies cache nothing
    assert usage["input_tokens"] > 0 and usage["output_tokens"] >= 120  # the fakes count words
    page = await (await client.get("/v1/repo/r1/targets/t1/stim/output?limit=1", headers=headers)).json()
    assert page["usage"] == usage
    # Neither model is in the price table: no cost, and why (never a guess).
    version = shipped_prices().version
    assert usage["cost_usd"] is None and usage["price_table"] == version
    assert usage["cost_unknown"] == (f"no price for model '{model_for(server)}' in the price table {version} "
                                     "(add it to DATA/prices.json)")
    seed_target(paths, [gen(server, 1)], target="t2")  # never run: no usage at all
    never = await (await client.get("/v1/repo/r1/targets/t2/stim", headers=headers)).json()
    assert never["status"] == "not_started" and never["usage"] is None
    metrics = await (await client.get("/metrics")).text()
    provider = "anthropic" if isinstance(server, FakeAnthropic) else "openai"
    model = model_for(server)
    assert f'stimserver_llm_requests_total{{model="{model}",outcome="ok",provider="{provider}"}}' in metrics
    assert f'stimserver_llm_tokens_total{{direction="output",model="{model}",provider="{provider}"}}' in metrics


async def test_cost_is_summed_per_job_and_survives_a_hand_back(make_runner, paths, server, aiohttp_client,
                                                               settings):
    anthropic = isinstance(server, FakeAnthropic)
    model = "claude-sonnet-4-5-20250929" if anthropic else LOCAL  # a shipped price; one DATA/prices.json adds
    paths.root.mkdir(parents=True, exist_ok=True)
    (paths.root / "prices.json").write_text(orjson.dumps({"version": "local-1", "models": {
        LOCAL: {"input": 0.5, "output": 2.0, "cache_read": 0.25}}}).decode())
    server.default = lambda body: Reply(numbered_answer(body["messages"][-1]["content"]), cache_read=2,
                                        cache_write=1 if anthropic else 0)
    server.latency = 0.1
    env = env_for(server, STIMSERVER_DATA=str(paths.root))
    runner, ref = await start_job(make_runner, paths, server, [{**gen(server, 500), "model": model}], env=env,
                                  max_concurrency=2)
    await wait_until(lambda: logged(paths, ref) >= 3, "three answers to be logged")
    await runner.close()  # what SIGTERM does
    await make_runner(llm_factory=client_factory(Settings.from_env(env)))
    record = await wait_until(lambda: ended(paths, ref), "the next runner to finish")
    assert record["status"] == "complete", record["error"]
    usage = usage_of(paths, ref)
    assert usage["requests"] == 10 and usage["cached_input_tokens"] == 20
    assert usage["cache_write_tokens"] == (10 if anthropic else 0)
    # input 3, cache read 0.3, 5-minute write 3.75, output 15 (claude-sonnet-4-5); 0.5, 0.25, -, 2 (the file's)
    rates = (3.0, 0.3, 3.75, 15.0) if anthropic else (0.5, 0.25, 0.0, 2.0)
    uncached = usage["input_tokens"] - usage["cached_input_tokens"] - usage["cache_write_tokens"]
    expected = sum(n * r for n, r in zip((uncached, usage["cached_input_tokens"], usage["cache_write_tokens"],
                                          usage["output_tokens"]), rates, strict=True)) / 1e6
    assert expected > 0 and usage["cost_usd"] == pytest.approx(expected, rel=1e-9)  # each answer counted once
    assert usage["price_table"] == "local-1" and usage["cost_unknown"] is None
    client = await aiohttp_client(create_app(Settings.build(data_dir=settings.data_dir, master_key=MASTER_KEY,
                                                            access_log=False, run_jobs=False)))
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "X-User-Id": "alice"}
    status = (await (await client.get("/v1/repo/r1/targets/t1/stim", headers=headers)).json())["usage"]
    assert status["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert status["price_table"] == "local-1" and status["cost_unknown"] is None
    metrics = await (await client.get("/metrics")).text()
    provider = "anthropic" if anthropic else "openai"
    assert f'stimserver_llm_cost_usd_total{{model="{model}",provider="{provider}"}}' in metrics


async def test_deleting_the_target_cancels_the_requests_in_flight(make_runner, paths, server):
    server.script(*[Slow(120)] * 10)
    runner, ref = await start_job(make_runner, paths, server, [gen(server, 200)], max_concurrency=4)
    await wait_until(lambda: len(server.received) == 4, "four requests in flight")
    await asyncio.wait_for(runner.stop("alice", "r1", "t1"), 5)  # not the 120 s the model would take
    record = record_of(paths, ref)
    assert record["status"] == "failed" and record["error"].startswith("stopped")
    assert len(server.received) == 4


async def test_failed_requests_log_one_line_each_without_the_key(make_runner, paths, server, caplog):
    server.script(Fail(503, "busy", retry_after=0.01))
    with caplog.at_level("WARNING", logger="stimserver.llm"):
        _, ref = await start_job(make_runner, paths, server, [gen(server, 5)])
        record = await wait_until(lambda: ended(paths, ref), "the job to finish")
    assert record["status"] == "complete", record["error"]
    lines = [r.getMessage() for r in caplog.records if r.name == "stimserver.llm"]
    provider = "anthropic" if isinstance(server, FakeAnthropic) else "openai"
    assert lines == [f"LLM request failed: provider={provider} model={model_for(server)} status=503 attempt=1 "
                     "(retry in 0.01 s)"]
    assert server.api_key not in caplog.text


async def test_in_flight_counts_a_request_until_its_answer_is_logged(tmp_path, monkeypatch):
    """With ``in_flight=n`` no more than n requests are sent and not yet logged, however slow the log is:
    what a crash can make the stream ask again."""
    import time

    from stimserver.jobs.engine import AnswerStream
    from stimserver.store.answers import AnswerLog

    slow_append = AnswerLog.append

    def append(self, request, answer):  # a slow disk: the log line lands well after the answer
        time.sleep(0.02)
        slow_append(self, request, answer)

    monkeypatch.setattr(AnswerLog, "append", append)
    sent: set[int] = set()
    unlogged_max = 0

    async def send(n: int) -> dict:
        nonlocal unlogged_max
        sent.add(n)
        unlogged_max = max(unlogged_max, len(sent - set(stream.log.done)))
        await asyncio.sleep(0)
        return {"n": n}

    async with AnswerStream(tmp_path, "t", window=32, in_flight=3) as stream:
        answers = [a async for a in stream.ordered(0, 40, send)]
    assert answers == [{"n": n} for n in range(40)]
    assert 1 < unlogged_max <= 3
