"""LLM generators end to end: the real provider clients against the local fake providers."""
from __future__ import annotations

import socket

import pytest

from stimserver.config import Settings
from stimserver.jobs import JobRef
from stimserver.llm.providers import client_factory
from tests.llm.fake_providers import TEST_KEY, Fail, Slow

from .conftest import hardcoded, lines_of, numbered_answer, record_of, seed_target, wait_until

CLAUDE = "claude-sonnet-4-6"
LOCAL = "llama3.1:8b"


def answer(body):
    return numbered_answer(body["messages"][-1]["content"])


async def run_job(make_runner, paths, generators, **config):
    ref = JobRef("alice", "r1", "t1", "stim")
    runner = await make_runner(llm_factory=client_factory(Settings.from_env()))
    await runner.submit(ref, seed_target(paths, generators, **config))
    record = await wait_until(lambda: (r := record_of(paths, ref)) and r["status"] in ("complete", "failed") and r,
                              "the job to end")
    return record, lines_of(paths, ref)


async def test_oneshot_through_anthropic(make_runner, paths, anthropic_server, use):
    use(anthropic_server)
    anthropic_server.script(answer)
    gen = {"type": "oneshot_qs", "model": CLAUDE, "numq": 4, "temperature": 0.4, "max_tokens": 300}
    record, lines = await run_job(make_runner, paths, [hardcoded(2), gen])
    assert record["status"] == "complete", record["error"]
    assert [line["stimulus_id"] for line in lines] == list(range(6))
    assert lines[2]["question"].startswith("Generated question") and lines[2]["type"] == "oneshot_qs"
    (sent,) = anthropic_server.received
    assert sent.body["model"] == CLAUDE and sent.body["max_tokens"] == 300 and sent.body["temperature"] == 0.4
    assert "You are a patient maths tutor" in sent.body["messages"][0]["content"]


async def test_persona_through_an_openai_compatible_server(make_runner, paths, openai_server, use):
    use(openai_server)
    openai_server.script(*[answer] * 3)
    gen = {"type": "persona", "model": LOCAL, "numq": 11, "seed": 2}
    record, lines = await run_job(make_runner, paths, [gen], extra_kwargs={"top_p": 0.5})
    assert record["status"] == "complete", record["error"]
    assert len({line["question"] for line in lines}) == 11 and len(openai_server.received) == 3
    assert all(r.body["top_p"] == 0.5 and "<persona>" in r.body["messages"][0]["content"]
               for r in openai_server.received)


async def test_rate_limits_are_retried(make_runner, paths, openai_server, use):
    use(openai_server)
    openai_server.script(Fail(429, "slow down", retry_after=0.01), answer)
    record, lines = await run_job(make_runner, paths, [{"type": "oneshot_qs", "model": LOCAL, "numq": 3}])
    assert record["status"] == "complete" and len(lines) == 3 and len(openai_server.received) == 2


@pytest.mark.parametrize("script, env, error", [
    ([Fail(500, "upstream exploded")] * 2, {}, "LLM provider error (500) after 1 retry: upstream exploded"),
    ([Fail(429, "slow down", retry_after=0.01)] * 2, {}, "rate limited by the LLM provider (429) after 1 retry"),
    (["1. Only this one?"] * 4, {}, "the model wrote only 1 distinct questions of the 3 asked for (4 requests)"),
    ([Slow(30)], {"STIMSERVER_LLM_TIMEOUT": "0.2", "STIMSERVER_LLM_MAX_RETRIES": "0"}, "timed out after 0.2 s"),
], ids=["server-error", "rate-limited", "too-few-questions", "timeout"])
async def test_provider_failures_fail_the_job_clearly(make_runner, paths, anthropic_server, use, script, env,
                                                      error):
    use(anthropic_server, **env)
    anthropic_server.script(*script)
    record, lines = await run_job(make_runner, paths, [hardcoded(5), {"type": "oneshot_qs", "model": CLAUDE,
                                                                      "numq": 3}])
    assert record["status"] == "failed"
    assert record["error"].startswith("generators[1] (oneshot_qs): ") and error in record["error"]
    # committed before the failure: the hardcoded lines, and what the generator's answers gave so far
    streamed = 1 if error.startswith("the model wrote only") else 0
    assert [line["stimulus_id"] for line in lines] == list(range(5 + streamed))


async def test_a_wrong_key_is_named_but_never_shown(make_runner, paths, openai_server, use, monkeypatch):
    use(openai_server)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-secret-123456")
    record, _ = await run_job(make_runner, paths, [{"type": "oneshot_qs", "model": LOCAL, "numq": 2}])
    assert record["status"] == "failed" and "check OPENAI_API_KEY" in record["error"]
    assert "sk-wrong-secret" not in record["error"] and TEST_KEY not in record["error"]


async def test_an_unreachable_provider(make_runner, paths, use, monkeypatch, openai_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    use(openai_server, OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", STIMSERVER_LLM_MAX_RETRIES="0")
    record, _ = await run_job(make_runner, paths, [{"type": "oneshot_qs", "model": LOCAL, "numq": 2}])
    assert record["status"] == "failed"
    assert f"LLM provider unreachable at http://127.0.0.1:{port}/v1: connection refused" in record["error"]


async def test_no_credentials_at_all(make_runner, paths, use, monkeypatch):
    for key in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    record, _ = await run_job(make_runner, paths, [{"type": "oneshot_qs", "model": CLAUDE, "numq": 2}])
    assert record["status"] == "failed" and "set ANTHROPIC_API_KEY" in record["error"]
