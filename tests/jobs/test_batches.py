"""Batch mode of a rollout (``jobs.batches``, ``llm.batch``) against the fake providers' batch APIs.

The fakes speak both protocols (OpenAI files + /v1/batches, Anthropic /v1/messages/batches) with
their states, partial errors and results out of order (tests/llm/fake_batches.py). A real job
runner and the real LLM client run the job; nothing here sends a request one by one.
"""
from __future__ import annotations

import orjson
import pytest

from stimserver.config import Settings
from stimserver.jobs import JobRef
from stimserver.jobs.batches import BATCHES_FILE, MAX_ATTEMPTS, batch_progress, read_batches
from stimserver.llm.prices import shipped_prices
from stimserver.store.atomic import write_json_atomic
from stimserver.store.records import Records
from tests.llm.fake_providers import Fail, Reply

from .conftest import hardcoded, lines_of, record_of, seed_target, wait_until

CLAUDE = "claude-sonnet-4-5"
GPT = "gpt-4o-mini"
STIM = JobRef("alice", "r1", "t1", "stim")
ROLLOUT = JobRef("alice", "r1", "t1", "rollout")


def question_of(body) -> str:
    last = body["messages"][-1]["content"]
    return last if isinstance(last, str) else last[0]["text"]


def echo(body):
    return Reply(f"Answer to {question_of(body)}")


@pytest.fixture
def batch_env(use):
    """Point the settings at ``server`` with fast polls and small batches."""
    def point(server, size: int = 4, **env):
        server.batch_step_seconds = 0.0  # a batch ends the first time it is looked at, unless held
        use(server, STIMSERVER_BATCH_POLL_SECONDS="0.02", STIMSERVER_BATCH_SIZE=str(size), **env)
    return point


async def ended(paths, ref):
    return await wait_until(lambda: (r := record_of(paths, ref)) and r["status"] in ("complete", "failed") and r,
                            f"the {ref.kind} job to end")


async def stim_done(make_runner, paths, n: int, **config):
    runner = await make_runner(llm_factory=_factory())
    target = seed_target(paths, [hardcoded(n)], **config)
    await runner.submit(STIM, target)
    assert (await ended(paths, STIM))["status"] == "complete"
    return runner, target


def _factory():
    from stimserver.llm.providers import client_factory
    return client_factory(Settings.from_env())


async def submitted(paths) -> dict:
    """The rollout's one batch, once its id is recorded."""
    (entry,) = await wait_until(lambda: [b for b in read_batches(ROLLOUT.job_dir(paths))["batches"] if b.get("id")],
                                "the batch to be submitted")
    return entry


async def held_batch(make_runner, paths, server, batch_env, n: int, model: str = GPT):
    """A batch rollout of ``n`` lines whose one batch the provider holds until the test ends it
    (``finish_now``): the runner, and the batch's entry once its id is recorded."""
    batch_env(server, size=10)
    server.default = echo
    runner, target = await stim_done(make_runner, paths, n, model_name=model, batch=True)
    server.batch_step_seconds = 3600.0
    await runner.submit(ROLLOUT, target)
    return runner, await submitted(paths)


def sync_calls(server) -> list[str]:
    return [c for c in server.calls if c in ("POST /v1/messages", "POST /v1/chat/completions")]


async def test_anthropic_batches_answer_every_trajectory_in_order_at_the_batch_price(make_runner, paths,
                                                                                   anthropic_server, batch_env):
    batch_env(anthropic_server)
    anthropic_server.default = echo
    runner, target = await stim_done(make_runner, paths, 5, model_name=CLAUDE, num_traj_per_stimulus=2, batch=True,
                                     max_tokens=50, temperature=0.5)
    await runner.submit(ROLLOUT, target)
    record = await ended(paths, ROLLOUT)
    assert record["status"] == "complete", record["error"]
    lines = lines_of(paths, ROLLOUT)
    assert [(line["stimulus_id"], line["trajectory_id"]) for line in lines] == [(s, t) for s in range(5)
                                                                                for t in range(2)]
    assert [line["response"]["content"] for line in lines] == [f"Answer to Q{s}?" for s in range(5) for _ in "ab"]
    assert sync_calls(anthropic_server) == []  # nothing one by one
    assert len(anthropic_server.batches) == 3  # 10 requests, 4 a batch
    state = read_batches(ROLLOUT.job_dir(paths))
    assert [len(b["requests"]) for b in state["batches"]] == [4, 4, 2]
    assert all(b["collected"] and b["id"] in anthropic_server.batches for b in state["batches"])
    # the same body a request sent alone carries: the cache breakpoint on the teacher's system prompt
    sent = anthropic_server.batch_received[0]
    assert sent.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent.body["temperature"] == 0.5 and sent.body["max_tokens"] == 50
    assert sent.headers.get("anthropic-version") == "2023-06-01"  # the version that takes a temperature
    usage = orjson.loads((ROLLOUT.job_dir(paths) / "usage.json").read_bytes())
    price = shipped_prices().lookup(CLAUDE)
    full = (usage["input_tokens"] * price.input + usage["output_tokens"] * price.output) / 1e6
    assert usage["requests"] == 10 and usage["cost_usd"] == pytest.approx(full * price.batch_discount)


@pytest.mark.parametrize("error_file", ["error", "output"])
async def test_openai_partial_errors_rejections_and_misses(make_runner, paths, openai_server, batch_env,
                                                          error_file):
    # A 400 is that request's own fault: its line fails at once. A 500 is a miss: the request goes into a
    # later batch. OpenAI puts non-2xx answers in the error file (or the output file): both are read.
    batch_env(openai_server, size=10)
    openai_server.error_responses_file = error_file
    openai_server.script(echo, Fail(400, "prompt too long"), Fail(500, "overloaded"), echo, echo, echo)
    openai_server.default = echo
    runner, target = await stim_done(make_runner, paths, 3, model_name=GPT, num_traj_per_stimulus=2, batch=True)
    await runner.submit(ROLLOUT, target)
    record = await ended(paths, ROLLOUT)
    assert record["status"] == "complete", record["error"]
    lines = lines_of(paths, ROLLOUT)
    assert len(lines) == 6
    assert lines[1]["response"] is None and "prompt too long" in lines[1]["error"]
    assert lines[2]["response"]["content"] == "Answer to Q1?"  # answered by the second batch
    state = read_batches(ROLLOUT.job_dir(paths))
    assert [b["requests"] for b in state["batches"]] == [[0, 1, 2, 3, 4, 5], [2]]
    assert sync_calls(openai_server) == []
    body = openai_server.batch_received[0].body
    assert body["model"] == GPT and body["messages"][-1] == {"role": "user", "content": "Q0?"}


async def test_expired_requests_go_again_then_fail_their_lines(make_runner, paths, anthropic_server, batch_env):
    batch_env(anthropic_server, size=10)
    anthropic_server.default = echo
    runner, target = await stim_done(make_runner, paths, 2, model_name=CLAUDE, batch=True)
    expired: set[str] = set()

    def expire_new() -> bool:  # every batch expires before it answers anything
        for batch_id in list(anthropic_server.batches):
            if batch_id not in expired:
                anthropic_server.hold(batch_id)
                anthropic_server.expire(batch_id)
                expired.add(batch_id)
        return record_of(paths, ROLLOUT) is not None and record_of(paths, ROLLOUT)["status"] == "failed" or \
            len(expired) >= MAX_ATTEMPTS and (record_of(paths, ROLLOUT) or {}).get("status") == "complete"

    anthropic_server.batch_step_seconds = 3600.0  # nothing happens by itself
    await runner.submit(ROLLOUT, target)
    await wait_until(expire_new, "every attempt to expire")
    record = record_of(paths, ROLLOUT)
    assert record["status"] == "complete", record["error"]
    lines = lines_of(paths, ROLLOUT)
    assert all(line["response"] is None and f"after {MAX_ATTEMPTS} batch attempts" in line["error"] for line in lines)
    assert len(anthropic_server.batches) == MAX_ATTEMPTS


async def test_a_restart_polls_the_same_batch_and_never_submits_twice(make_runner, paths, openai_server, batch_env):
    runner, entry = await held_batch(make_runner, paths, openai_server, batch_env, 3)
    batch_id = entry["id"]
    progress = batch_progress(ROLLOUT.job_dir(paths))
    assert progress["running"] == 1 and progress["requests"] == 3 and progress["ids"] == [batch_id]
    await runner.close()  # a shutdown: the job goes back to pending with its batch recorded
    assert record_of(paths, ROLLOUT)["status"] == "pending"
    await openai_server.restart()  # and the provider restarts too, mid-batch
    openai_server.finish_now(batch_id)
    runner2 = await make_runner(llm_factory=_factory())
    record = await ended(paths, ROLLOUT)
    assert record["status"] == "complete", record["error"]
    assert list(openai_server.batches) == [batch_id]
    assert [line["response"]["content"] for line in lines_of(paths, ROLLOUT)] == [f"Answer to Q{i}?"
                                                                                  for i in range(3)]
    await runner2.close()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_batch_submitted_just_before_a_crash_is_found_and_adopted(make_runner, paths, openai_server,
                                                                          anthropic_server, batch_env, provider):
    # The crash came between the submit and the write of its id: batches.json has the intent only.
    server, model = (openai_server, GPT) if provider == "openai" else (anthropic_server, CLAUDE)
    runner, entry = await held_batch(make_runner, paths, server, batch_env, 2, model)
    await runner.close()
    state = read_batches(ROLLOUT.job_dir(paths))
    state["batches"][0]["id"] = None
    state["batches"][0]["status"] = "submitting"
    write_json_atomic(ROLLOUT.job_dir(paths) / BATCHES_FILE, state)
    server.finish_now(entry["id"])
    runner2 = await make_runner(llm_factory=_factory())
    record = await ended(paths, ROLLOUT)
    assert record["status"] == "complete", record["error"]
    assert list(server.batches) == [entry["id"]]  # adopted, not submitted again
    assert read_batches(ROLLOUT.job_dir(paths))["batches"][0]["id"] == entry["id"]
    await runner2.close()


async def test_an_intent_whose_batch_was_never_created_is_sent_again(make_runner, paths, openai_server, batch_env):
    batch_env(openai_server, size=10)
    openai_server.default = echo
    runner, target = await stim_done(make_runner, paths, 2, model_name=GPT, batch=True)
    job_dir = ROLLOUT.job_dir(paths)
    openai_server.fail_call("POST /v1/batches", Fail(400, "no"))  # the first submit is refused
    await runner.submit(ROLLOUT, target)
    record = await ended(paths, ROLLOUT)
    assert record["status"] == "failed" and "could not submit a batch" in record["error"]
    assert [b["id"] for b in read_batches(job_dir)["batches"]] == [None]
    await runner.submit(ROLLOUT, target)  # resume: the intent is looked for, not found, and sent again
    record = await ended(paths, ROLLOUT)
    assert record["status"] == "complete", record["error"]
    assert len(openai_server.batches) == 1 and len(read_batches(job_dir)["batches"]) == 1


async def test_a_whole_batch_rejected_before_any_answer_fails_the_job_without_logging(make_runner, paths,
                                                                                    openai_server, batch_env):
    batch_env(openai_server, size=10)
    openai_server.default = lambda body: Fail(400, "temperature is not supported")
    runner, target = await stim_done(make_runner, paths, 4, model_name=GPT, num_traj_per_stimulus=2, batch=True)
    await runner.submit(ROLLOUT, target)
    record = await ended(paths, ROLLOUT)
    assert record["status"] == "failed" and "rejected all 8 requests" in record["error"]
    assert lines_of(paths, ROLLOUT) == []


async def test_the_status_shows_batch_progress(make_runner, paths, openai_server, batch_env):
    runner, entry = await held_batch(make_runner, paths, openai_server, batch_env, 4)
    from stimserver.handlers.jobs import batch_fields
    job = record_of(paths, ROLLOUT)
    fields = batch_fields(Records(paths), ROLLOUT, job, 0)
    assert fields["batches"]["ids"] == [entry["id"]] and fields["batches"]["requests"] == 4
    openai_server.finish_now(entry["id"])
    assert (await ended(paths, ROLLOUT))["status"] == "complete"
    assert batch_progress(ROLLOUT.job_dir(paths))["running"] == 0


async def test_deleting_the_target_cancels_its_running_batches_and_a_shutdown_does_not(make_runner, paths,
                                                                                     openai_server, batch_env):
    runner, entry = await held_batch(make_runner, paths, openai_server, batch_env, 2)
    await runner.close()  # a shutdown: the batch runs on, for the next runner
    assert not any(call.endswith("/cancel") for call in openai_server.calls)
    runner2 = await make_runner(llm_factory=_factory())
    await wait_until(lambda: (record_of(paths, ROLLOUT) or {}).get("status") == "running", "the job to resume")
    await runner2.stop("alice", "r1", "t1")  # what deleting the target does first
    assert f"POST /v1/batches/{entry['id']}/cancel" in openai_server.calls
    await runner2.close()
