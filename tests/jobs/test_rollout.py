"""The rollout kind end to end in one process: a real runner, the real LLM client, the fake providers."""
from __future__ import annotations

import os
import random

import orjson
import pytest

from stimserver.config import Settings
from stimserver.jobs import ConfigProblem, JobRef
from stimserver.jobs.rollout import NO_MODEL, STIM_NOT_COMPLETE, RolloutKind
from stimserver.llm.providers import client_factory
from stimserver.store import output
from stimserver.store.answers import answer_log_path
from stimserver.store.frozen import FROZEN_DATA
from tests.llm.fake_providers import Fail, Reply, Slow

from .conftest import TEACHER, hardcoded, lines_of, record_of, seed_target, wait_until

LOCAL = "llama3.1:8b"
CLAUDE = "claude-sonnet-4-6"
STIM = JobRef("alice", "r1", "t1", "stim")
ROLLOUT = JobRef("alice", "r1", "t1", "rollout")
TOOLS = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]


def question_of(body) -> str:
    return body["messages"][-1]["content"] if isinstance(body["messages"][-1]["content"], str) else \
        body["messages"][-1]["content"][0]["text"]


def echo(body):
    return Reply(f"Answer to {question_of(body)}")


async def ended(paths, ref):
    return await wait_until(lambda: (r := record_of(paths, ref)) and r["status"] in ("complete", "failed") and r,
                            f"the {ref.kind} job to end")


async def stim_then_rollout(make_runner, paths, generators, **config):
    """A runner with the real client; the stim job run to completion; the rollout submitted and ended."""
    runner = await make_runner(llm_factory=client_factory(Settings.from_env()))
    target = seed_target(paths, generators, **{"model_name": LOCAL, **config})
    await runner.submit(STIM, target)
    assert (await ended(paths, STIM))["status"] == "complete"
    await runner.submit(ROLLOUT, target)
    return runner, target, await ended(paths, ROLLOUT)


async def test_k_trajectories_per_stimulus_in_order_with_the_documented_line(make_runner, paths, openai_server,
                                                                            use):
    use(openai_server)
    openai_server.default = echo
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(5)], num_traj_per_stimulus=3,
                                           temperature=0.7, max_tokens=64, extra_kwargs={"top_p": 0.9})
    assert record["status"] == "complete", record["error"]
    assert record["expected_lines"] == 15 and record["config"] == {
        "model_name": LOCAL, "num_traj_per_stimulus": 3, "temperature": 0.7, "max_tokens": 64,
        "max_concurrency": 10, "extra_kwargs": {"top_p": 0.9}, "batch": False, "max_cost_usd": None,
        "stim_job_id": record_of(paths, STIM)["job_id"]}
    lines = lines_of(paths, ROLLOUT)
    assert [(line["stimulus_id"], line["trajectory_id"]) for line in lines] == [(s, t) for s in range(5)
                                                                                for t in range(3)]
    stim = lines_of(paths, STIM)
    first = lines[4]  # stimulus 1, trajectory 1
    assert first["question"] == first["stimulus"] == "Q1?"
    assert first["unconditioned_stimulus"] == stim[1]["unconditioned_stimulus"]
    assert first["conditioned_stimulus"] == stim[1]["conditioned_stimulus"]
    assert first["response"] == {"role": "assistant", "content": "Answer to Q1?", "finish_reason": "stop",
                                 "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}
    assert first["tokens"] == 12 and first["model"] == LOCAL and first["temperature"] == 0.7
    assert first["error"] is None
    assert len(openai_server.received) == 15
    sent = next(r.body for r in openai_server.received if question_of(r.body) == "Q0?")  # any order: concurrent
    assert sent["messages"] == [*TEACHER, {"role": "user", "content": "Q0?"}]  # the unconditioned stimulus
    assert sent["temperature"] == 0.7 and sent["max_tokens"] == 64 and sent["top_p"] == 0.9 and "n" not in sent
    assert "tools" not in sent


async def test_override_stimulus_and_tools_through_anthropic(make_runner, paths, anthropic_server, use):
    use(anthropic_server)
    anthropic_server.default = lambda body: Reply("", tool_calls=(("calc", {"x": 1}),))
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(2, rollout_with_conditioned=True)],
                                           model_name=CLAUDE, tools=TOOLS)
    assert record["status"] == "complete", record["error"]
    lines = lines_of(paths, ROLLOUT)
    assert len(lines) == 2
    sent = anthropic_server.received[0].body
    # trajectory_override_stimulus (= the conditioned one, the student prompt): its system message moves
    assert sent["system"] == [{"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}}]
    assert "tools" not in sent  # the student prompt has no tools
    assert lines[0]["trajectory_override_stimulus"] == lines[0]["conditioned_stimulus"]
    (call,) = lines[0]["response"]["tool_calls"]
    assert call["function"] == {"name": "calc", "arguments": '{"x":1}'}
    assert lines[0]["response"]["content"] == "" and lines[0]["response"]["finish_reason"] == "tool_calls"


async def test_the_teacher_prompts_tools_are_sent(make_runner, paths, openai_server, use):
    use(openai_server)
    openai_server.default = echo
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(1)], tools=TOOLS)
    assert record["status"] == "complete", record["error"]
    assert openai_server.received[0].body["tools"] == TOOLS


async def test_trajectory_requests_share_one_prefix_and_count_cached_tokens(make_runner, paths, openai_server, use):
    # OpenAI-compatible servers cache a prompt's prefix by themselves when it is byte-identical across requests.
    use(openai_server)
    openai_server.default = lambda body: Reply(f"Answer to {question_of(body)}", cache_read=4)
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(3)], num_traj_per_stimulus=2, tools=TOOLS)
    assert record["status"] == "complete", record["error"]
    bodies = [r.body for r in openai_server.received]
    assert len(bodies) == 6 and len({question_of(body) for body in bodies}) == 3
    prefixes = {orjson.dumps({"tools": body["tools"], "messages": body["messages"][:-1]}) for body in bodies}
    assert prefixes == {orjson.dumps({"tools": TOOLS, "messages": TEACHER})}  # in the order sent, key by key
    lines = lines_of(paths, ROLLOUT)
    assert [line["response"]["usage"] for line in lines] == [
        {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12, "cached_tokens": 4}] * 6
    usage = orjson.loads((ROLLOUT.job_dir(paths) / "usage.json").read_bytes())
    assert (usage["requests"], usage["input_tokens"], usage["cached_input_tokens"], usage["cache_write_tokens"]) == (
        6, 54, 24, 0)


def test_prerequisites_are_config_problems(paths):
    from stimserver.jobs import transitions
    from stimserver.store.datasets import Datasets

    def submit(target):
        return transitions.submit(paths, RolloutKind(), ROLLOUT, target, Datasets(paths.root))

    target = seed_target(paths, [hardcoded(2)], model_name=LOCAL)
    with pytest.raises(ConfigProblem, match=f"^{STIM_NOT_COMPLETE}: target 't1' has no stim job"):
        submit(target)
    from stimserver.jobs.stim import StimKind

    transitions.submit(paths, StimKind(), STIM, target, Datasets(paths.root))  # pending, never run
    with pytest.raises(ConfigProblem, match=f"^{STIM_NOT_COMPLETE}: the stim job of target 't1' is pending"):
        submit(target)
    with pytest.raises(ConfigProblem, match=f"^{NO_MODEL}"):
        RolloutKind().plan(_source(paths, seed_target(paths, [hardcoded(2)]), complete=True))
    assert record_of(paths, ROLLOUT) is None


def _source(paths, target, complete):
    from stimserver.jobs import JobSource
    from stimserver.store import jobrecords
    from stimserver.store.datasets import Datasets

    if complete:
        jobrecords.write_record(STIM.job_dir(paths), {"job_id": 1, "status": "complete"})
    return JobSource(paths, "alice", "r1", "t1", target, Datasets(paths.root))


async def test_rejected_requests_become_error_lines_and_the_job_goes_on(make_runner, paths, openai_server, use):
    use(openai_server)
    openai_server.default = lambda body: (Fail(400, "This model's maximum context length is 8192 tokens")
                                          if question_of(body) in ("Q1?", "Q3?") else echo(body))
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(4)], num_traj_per_stimulus=2)
    assert record["status"] == "complete", record["error"]
    lines = lines_of(paths, ROLLOUT)
    failed = [i for i, line in enumerate(lines) if line["response"] is None]
    assert failed == [2, 3, 6, 7] and len(lines) == 8
    assert all(lines[i]["tokens"] is None and "maximum context length is 8192" in lines[i]["error"] for i in failed)
    assert "(400)" in lines[2]["error"]
    assert len(openai_server.received) == 8  # rejections are not retried
    assert orjson.loads((ROLLOUT.job_dir(paths) / "failed.json").read_bytes()) == {"requests": [2, 3, 6, 7]}


async def test_a_provider_that_rejects_every_request_fails_the_job_and_logs_nothing(
        make_runner, paths, openai_server, use):
    use(openai_server)
    openai_server.default = lambda body: Fail(400, "unsupported parameter: 'logit_bias'")
    runner, target, record = await stim_then_rollout(make_runner, paths, [hardcoded(30)], max_concurrency=8)
    assert record["status"] == "failed"
    assert "rejected all of the first 8 trajectory requests and answered none" in record["error"]
    assert "unsupported parameter: 'logit_bias'" in record["error"]
    assert "POST /v1/repo/r1/targets/t1/rollout to resume" in record["error"]
    assert output.line_count(ROLLOUT.job_dir(paths)) == 0
    log = answer_log_path(ROLLOUT.job_dir(paths), "rollout")
    assert not log.exists() or log.read_bytes() == b""  # held back: a resume asks them again
    assert len(openai_server.received) < 30

    openai_server.default = echo  # the provider fixed: the resume asks every request, once
    before = len(openai_server.received)
    await runner.submit(ROLLOUT, target)
    done = await ended(paths, ROLLOUT)
    assert done["status"] == "complete", done["error"]
    assert [line["response"] is not None for line in lines_of(paths, ROLLOUT)] == [True] * 30
    assert sorted(question_of(r.body) for r in openai_server.received[before:]) == sorted(
        f"Q{i}?" for i in range(30))


async def test_few_requests_all_rejected_fail_the_job_instead_of_waiting(make_runner, paths, openai_server, use):
    use(openai_server)
    openai_server.default = lambda body: Fail(400, "context length exceeded")
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(2)])
    assert record["status"] == "failed" and "rejected all of the first 2" in record["error"]


async def test_a_failing_key_fails_the_job_at_once_and_post_resumes_without_asking_again(
        make_runner, paths, openai_server, use):
    use(openai_server, STIMSERVER_LLM_MAX_RETRIES="0")
    answered = 0

    def until_the_key_is_revoked(body):
        nonlocal answered
        answered += 1
        if answered == 7:
            openai_server.api_key = "another-key"  # revoked: every request after this one is a 401
        return echo(body)

    openai_server.default = until_the_key_is_revoked
    runner, target, record = await stim_then_rollout(make_runner, paths, [hardcoded(20)], max_concurrency=1)
    assert record["status"] == "failed"
    assert "LLM provider rejected the API key (401); check OPENAI_API_KEY" in record["error"]
    assert "POST /v1/repo/r1/targets/t1/rollout to resume it from its committed lines" in record["error"]
    assert "Incorrect API key provided" not in record["error"]  # the key never reaches the user
    committed = output.line_count(ROLLOUT.job_dir(paths))
    # At once: the first 401 ended it (one more request may have left as the cap freed up). Every
    # answer is in the log; the last few may not be committed yet (their log writes were still in
    # a thread when the 401 came): the resume yields those without asking.
    logged = sorted(orjson.loads(line)["request"]
                    for line in answer_log_path(ROLLOUT.job_dir(paths), "rollout").read_bytes().splitlines())
    assert logged == list(range(7)) and committed <= 7 and len(openai_server.received) in (8, 9)
    kept = lines_of(paths, ROLLOUT)

    openai_server.api_key, openai_server.default = os.environ["OPENAI_API_KEY"], echo  # fixed
    before = len(openai_server.received)
    again = await runner.submit(ROLLOUT, target)
    assert again["job_id"] == record["job_id"] and again["status"] == "pending"
    done = await ended(paths, ROLLOUT)
    assert done["status"] == "complete", done["error"]
    lines = lines_of(paths, ROLLOUT)
    assert lines[:committed] == kept and [line["stimulus_id"] for line in lines] == list(range(20))
    asked = [question_of(r.body) for r in openai_server.received[before:]]
    assert asked == [f"Q{i}?" for i in range(7, 20)]  # nothing committed was asked again


async def test_an_unknown_model_fails_the_job(make_runner, paths, openai_server, use):
    use(openai_server)
    openai_server.models = {"some-other-model"}
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(3)])
    assert record["status"] == "failed" and f"model '{LOCAL}' not found (404)" in record["error"]
    assert output.line_count(ROLLOUT.job_dir(paths)) == 0 and 1 <= len(openai_server.received) <= 3


async def test_answers_out_of_order_are_committed_in_order(make_runner, paths, openai_server, use):
    use(openai_server)
    rng = random.Random(7)
    openai_server.default = lambda body: Slow(rng.uniform(0, 0.05), f"Answer to {question_of(body)}")
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(60)], max_concurrency=8,
                                           num_traj_per_stimulus=2)
    assert record["status"] == "complete", record["error"]
    lines = lines_of(paths, ROLLOUT)
    assert [(line["stimulus_id"], line["trajectory_id"]) for line in lines] == [(s, t) for s in range(60)
                                                                                for t in range(2)]
    assert all(line["response"]["content"] == f"Answer to {line['question']}" for line in lines)
    arrival = [question_of(r.body) for r in openai_server.received]
    assert 1 < openai_server.max_in_flight <= 8 and len(arrival) == 120
    logged = [int(line.split(b'"request":')[1].split(b",")[0])
              for line in answer_log_path(ROLLOUT.job_dir(paths), "rollout").read_bytes().splitlines()]
    assert sorted(logged) == list(range(120)) and logged != sorted(logged)  # answered out of order


async def test_the_stimuli_are_frozen_at_submit(make_runner, paths, openai_server, use):
    use(openai_server)
    openai_server.default = echo
    runner = await make_runner(llm_factory=client_factory(Settings.from_env()))
    target = seed_target(paths, [hardcoded(3)], model_name=LOCAL)
    await runner.submit(STIM, target)
    await ended(paths, STIM)
    stim_data = STIM.job_dir(paths) / output.DATA_NAME
    await runner.close()  # nothing runs the rollout until the stim job is replaced
    await runner.submit(ROLLOUT, target)
    frozen = ROLLOUT.job_dir(paths) / FROZEN_DATA
    assert os.path.samestat(frozen.stat(), stim_data.stat())  # a hard link, not a copy
    await runner.discard(STIM)
    runner = await make_runner(llm_factory=client_factory(Settings.from_env()))
    await runner.submit(STIM, seed_target(paths, [hardcoded(3, prefix="New")], model_name=LOCAL))
    done = await ended(paths, ROLLOUT)
    assert done["status"] == "complete", done["error"]
    assert [line["question"] for line in lines_of(paths, ROLLOUT)] == ["Q0?", "Q1?", "Q2?"]


def test_a_failed_rollout_is_the_same_job_after_a_stim_rerun():
    from stimserver.jobs import JobPlan

    spec = {"model_name": LOCAL, "num_traj_per_stimulus": 1, "stim_job_id": 1, "stimuli": 3}
    failed = {"status": "failed", "spec": spec, "config": {"model_name": LOCAL, "stim_job_id": 1}}
    kind = RolloutKind()
    assert kind.same_job(failed, JobPlan({"model_name": LOCAL, "stim_job_id": 2}, {**spec, "stim_job_id": 2,
                                                                                 "stimuli": 5}, 5))
    assert not kind.same_job(failed, JobPlan({"model_name": "other", "stim_job_id": 1},
                                             {**spec, "model_name": "other"}, 3))


def test_a_stim_job_that_changes_during_the_submit_is_refused_and_nothing_is_left(paths):
    from stimserver.jobs import transitions
    from stimserver.store import jobrecords
    from stimserver.store.datasets import Datasets
    from stimserver.store.locks import FileLock

    target = seed_target(paths, [hardcoded(3)], model_name=LOCAL)
    stim_dir = STIM.job_dir(paths)
    stim_dir.mkdir(parents=True)
    lock = FileLock.acquire(output.lock_path(stim_dir), blocking=True)
    with lock, output.OutputWriter.open(stim_dir, lock) as w:
        w.append([output.encode({"stimulus_id": i, "question": f"Q{i}?"}) for i in range(3)])
    jobrecords.write_record(stim_dir, {"job_id": 7, "status": "complete", "expected_lines": 3})

    class RacedKind(RolloutKind):
        def plan(self, source):
            plan = super().plan(source)
            jobrecords.write_record(stim_dir, {"job_id": 8, "status": "pending"})  # a re-run, just now
            return plan

    with pytest.raises(ConfigProblem, match="changed while the rollout was being submitted; POST again"):
        transitions.submit(paths, RacedKind(), ROLLOUT, target, Datasets(paths.root))
    assert record_of(paths, ROLLOUT) is None
    assert ".rollout.prepare" not in {p.name for p in stim_dir.parent.iterdir()}  # the staging folder went
    assert list(ROLLOUT.job_dir(paths).iterdir()) == []  # nothing frozen, nothing recorded


def _status_fields(paths, record):
    from stimserver.handlers.jobs import rollout_fields
    from stimserver.store.records import Records

    return rollout_fields(Records(paths), ROLLOUT, record, record["lines"] if "lines" in record else
                          len(lines_of(paths, ROLLOUT)))


async def test_identical_trajectories_are_counted_and_warned_about(make_runner, paths, openai_server, use):
    """A server that decodes greedily at temperature 1 answers every trajectory alike: the status says so."""
    use(openai_server)
    openai_server.default = echo  # the same answer for the same question: greedy
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(5)], num_traj_per_stimulus=2,
                                           temperature=1.0)
    assert record["status"] == "complete"
    fields = _status_fields(paths, record)
    assert fields["duplicate_stimuli"] == 5
    assert "all 5 stimuli compared got identical trajectories at temperature 1.0" in fields["warning"]
    assert "STIMSERVER_OPENAI_SERVER=transformers" in fields["warning"]


async def test_distinct_trajectories_carry_no_warning(make_runner, paths, openai_server, use):
    use(openai_server)
    rng = random.Random(7)
    openai_server.default = lambda body: Reply(f"{question_of(body)} {rng.random()}")
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(4)], num_traj_per_stimulus=3,
                                           temperature=1.0)
    fields = _status_fields(paths, record)
    assert (fields["duplicate_stimuli"], fields["warning"]) == (0, None)


async def test_identical_trajectories_at_temperature_0_are_counted_not_warned(make_runner, paths, openai_server,
                                                                             use):
    use(openai_server)
    openai_server.default = echo
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(3)], num_traj_per_stimulus=2,
                                           temperature=0.0)
    fields = _status_fields(paths, record)
    assert (fields["duplicate_stimuli"], fields["warning"]) == (3, None)


@pytest.mark.parametrize("temperature, asked", [(1.0, True), (0.0, False)])
async def test_transformers_serve_is_asked_to_sample(make_runner, paths, openai_server, use, temperature, asked):
    """STIMSERVER_OPENAI_SERVER=transformers adds generation_config (a JSON string) when sampling is wanted."""
    use(openai_server, STIMSERVER_OPENAI_SERVER="transformers")
    openai_server.default = echo
    await stim_then_rollout(make_runner, paths, [hardcoded(2)], num_traj_per_stimulus=2, temperature=temperature,
                            extra_kwargs={"extra_body": {"top_k": 5}})
    bodies = [r.body for r in openai_server.received]
    assert len(bodies) == 4 and all(b["top_k"] == 5 for b in bodies)  # the user's extra_body is kept
    assert all((b.get("generation_config") == '{"do_sample": true}') is asked for b in bodies)


async def test_anthropic_reads_the_teacher_prefix_from_its_cache_after_the_first_request(make_runner, paths,
                                                                                       anthropic_server, use):
    # The fake reports a cache read only for a marked prefix byte-identical to one written before, as the API does.
    use(anthropic_server, STIMSERVER_ANTHROPIC_CACHE="1h")
    anthropic_server.auto_cache = True
    anthropic_server.min_cache_tokens = 5  # the test's teacher prompt is short; the real minimum is 1,024
    anthropic_server.default = echo
    _, _, record = await stim_then_rollout(make_runner, paths, [hardcoded(4)], model_name="claude-sonnet-4-5",
                                           max_concurrency=1)
    assert record["status"] == "complete", record["error"]
    prefix = len(TEACHER[0]["content"].split())
    usage = orjson.loads((ROLLOUT.job_dir(paths) / "usage.json").read_bytes())
    assert (usage["cache_write_tokens"], usage["cached_input_tokens"]) == (prefix, 3 * prefix)
    assert anthropic_server.received[0].body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    uncached = usage["input_tokens"] - usage["cached_input_tokens"] - usage["cache_write_tokens"]
    expected = (uncached * 3.0 + usage["cached_input_tokens"] * 0.3 + usage["cache_write_tokens"] * 6.0
                + usage["output_tokens"] * 15.0) / 1e6  # claude-sonnet-4-5 in the shipped table, 1 h writes
    assert usage["cost_usd"] == pytest.approx(expected)
    lines = lines_of(paths, ROLLOUT)
    assert [line["response"]["usage"].get("cached_tokens", 0) for line in lines] == [0, prefix, prefix, prefix]
