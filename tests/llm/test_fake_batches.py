"""The fake providers' batch APIs, count_tokens and automatic prompt cache, driven by the official SDKs.

These fakes stand in for the real services in the batch client's tests, so what is checked here is
that the SDKs accept them unmodified and that they behave as the documented APIs do: every state,
partial errors, results out of input order, expiry, cancel, pagination, a restart mid-batch. The
batches are paced by a ManualClock, so nothing here sleeps except the one real-clock test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final

import anthropic
import openai
import pytest

from .fake_providers import (
    TEST_KEY,
    Fail,
    FakeAnthropic,
    FakeOpenAI,
    ManualClock,
    ProviderThread,
    Reply,
)

MODEL = "gpt-test"
CLAUDE = "claude-test"
ENDPOINT: Final = "/v1/chat/completions"
SYSTEM = "You are a patient tutor who answers every question in full sentences."  # 12 words
EPHEMERAL = {"type": "ephemeral"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def paced(server: FakeOpenAI | FakeAnthropic, clock: ManualClock) -> None:
    """One step per clock second, two requests a step; answers echo the question."""
    server.clock = clock
    server.batch_step_seconds = 1.0
    server.batch_requests_per_step = 2
    server.default = lambda body: Reply(f"Answer to {question(body)}")


def question(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else content[0]["text"]


@pytest.fixture
async def gpt(openai_server: FakeOpenAI, clock: ManualClock) -> AsyncIterator[openai.AsyncOpenAI]:
    paced(openai_server, clock)
    client = openai.AsyncOpenAI(api_key=TEST_KEY, base_url=f"{openai_server.url}/v1", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(anthropic_server: FakeAnthropic, clock: ManualClock) -> AsyncIterator[anthropic.AsyncAnthropic]:
    paced(anthropic_server, clock)
    client = anthropic.AsyncAnthropic(api_key=TEST_KEY, base_url=anthropic_server.url, max_retries=0)
    yield client
    await client.close()


# -- OpenAI Batch


def jsonl_line(custom_id: str, content: str, *, model: str = MODEL, url: str = ENDPOINT, **body: Any) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url,
                       "body": {"model": model, "messages": [{"role": "user", "content": content}], **body}})


async def openai_batch(gpt: openai.AsyncOpenAI, lines: list[str], **create: Any) -> openai.types.Batch:
    upload = await gpt.files.create(file=("requests.jsonl", "".join(f"{line}\n" for line in lines).encode()),
                                    purpose="batch")
    assert upload.purpose == "batch" and upload.status == "processed" and upload.filename == "requests.jsonl"
    return await gpt.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h", **create)


async def lines_of(gpt: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in (await gpt.files.content(file_id)).text.splitlines()]


async def test_an_openai_batch_goes_through_every_state_and_answers_out_of_order(
        gpt: openai.AsyncOpenAI, openai_server: FakeOpenAI, clock: ManualClock) -> None:
    ids = [f"q-{i}" for i in range(5)]
    batch = await openai_batch(gpt, [jsonl_line(i, f"Q{i[-1]}?", max_tokens=9) for i in ids],
                               metadata={"marker": "m-1"})
    assert batch.status == "validating" and batch.metadata == {"marker": "m-1"}
    assert batch.request_counts is not None and batch.request_counts.total == 0 and batch.output_file_id is None
    seen = []
    for _ in range(5):
        clock.advance(1)
        batch = await gpt.batches.retrieve(batch.id)
        assert batch.request_counts is not None
        seen.append((batch.status, batch.request_counts.completed))
    assert seen == [("in_progress", 0), ("in_progress", 2), ("in_progress", 4), ("finalizing", 5), ("completed", 5)]
    assert batch.request_counts is not None
    assert batch.model == MODEL and batch.request_counts.total == 5 and batch.request_counts.failed == 0
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at and batch.expires_at
    assert batch.error_file_id is None and batch.errors is None
    lines = await lines_of(gpt, batch.output_file_id)
    assert [line["custom_id"] for line in lines] != ids and sorted(line["custom_id"] for line in lines) == ids
    for line in lines:
        assert line["error"] is None and line["id"].startswith("batch_req_")
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"]
        body = response["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL
        assert body["choices"][0]["message"]["content"] == f"Answer to Q{line['custom_id'][-1]}?"
        assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    assert batch.usage is not None and (batch.usage.input_tokens, batch.usage.output_tokens) == (5, 15)
    # each request went through as the synchronous endpoint would have taken it, in input order
    assert [r.body["messages"][0]["content"] for r in openai_server.batch_received] == [f"Q{i}?" for i in range(5)]
    assert openai_server.batch_received[0].body["max_tokens"] == 9 and openai_server.received == []
    assert (await gpt.files.retrieve(batch.output_file_id or "")).purpose == "batch_output"


@pytest.mark.parametrize("error_responses_file", ["error", "output"])
async def test_partial_errors_keep_their_status_and_error_body(
        gpt: openai.AsyncOpenAI, openai_server: FakeOpenAI, error_responses_file: str) -> None:
    openai_server.error_responses_file = error_responses_file  # type: ignore[assignment]
    answers = {"Q1?": Fail(400, "max_tokens is too large"), "Q3?": Fail(500)}
    openai_server.default = lambda body: answers.get(question(body), Reply("fine"))
    openai_server.batch_step_seconds = 0  # the whole batch runs at the first look
    batch = await gpt.batches.retrieve((await openai_batch(gpt, [jsonl_line(f"r{i}", f"Q{i}?")
                                                                 for i in range(4)])).id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    output = await lines_of(gpt, batch.output_file_id)
    failed = [line for line in output if line["response"]["status_code"] != 200]
    if error_responses_file == "error":  # as OpenAI does: non-2xx answers are in the error file
        assert failed == []
        failed = await lines_of(gpt, batch.error_file_id)
    else:
        assert batch.error_file_id is None
    by_id = {line["custom_id"]: line for line in failed}
    assert sorted(by_id) == ["r1", "r3"] and all(line["error"] is None for line in failed)
    assert by_id["r1"]["response"]["status_code"] == 400
    assert by_id["r1"]["response"]["body"]["error"]["message"] == "max_tokens is too large"
    assert by_id["r3"]["response"]["status_code"] == 500
    assert by_id["r3"]["response"]["body"]["error"]["type"] == "server_error"


async def test_a_bad_input_file_fails_the_batch_with_line_errors(gpt: openai.AsyncOpenAI, clock: ManualClock) -> None:
    lines = [jsonl_line("a", "Q?"), "{not json", jsonl_line("a", "Q again?"),
             jsonl_line("b", "Q?", url="/v1/embeddings"), jsonl_line("c", "Q?", model="other-model")]
    batch = await openai_batch(gpt, lines)
    assert batch.status == "validating"
    clock.advance(1)
    batch = await gpt.batches.retrieve(batch.id)
    assert batch.status == "failed" and batch.failed_at and batch.errors is not None and batch.errors.data
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("invalid_json_line", 2), ("duplicate_custom_id", 3), ("url_mismatch", 4), ("model_mismatch", 5)]
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.request_counts is not None and batch.request_counts.total == 0

    empty = await openai_batch(gpt, [])
    clock.advance(1)
    empty = await gpt.batches.retrieve(empty.id)
    assert empty.status == "failed" and empty.errors is not None and empty.errors.data
    assert [e.code for e in empty.errors.data] == ["empty_file"]


async def test_the_calls_themselves_are_checked(gpt: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        await gpt.files.create(file=("requests.txt", b"{}"), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        await gpt.batches.create(input_file_id="file-nope", endpoint=ENDPOINT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        await gpt.batches.retrieve("batch_nope")
    with pytest.raises(openai.AuthenticationError):
        await gpt.with_options(api_key="sk-wrong").batches.list()


async def test_an_expired_openai_batch_keeps_what_was_answered(
        gpt: openai.AsyncOpenAI, openai_server: FakeOpenAI, clock: ManualClock) -> None:
    batch = await openai_batch(gpt, [jsonl_line(f"r{i}", f"Q{i}?") for i in range(5)])
    clock.advance(2)  # validated, two answered
    openai_server.hold(batch.id)
    clock.advance(3600)
    batch = await gpt.batches.retrieve(batch.id)
    assert batch.status == "in_progress" and batch.request_counts is not None
    assert batch.request_counts.completed == 2
    clock.advance(24 * 3600)
    batch = await gpt.batches.retrieve(batch.id)
    assert batch.status == "expired" and batch.expired_at == batch.expires_at
    assert sorted(line["custom_id"] for line in await lines_of(gpt, batch.output_file_id)) == ["r0", "r1"]
    errors = await lines_of(gpt, batch.error_file_id)
    assert sorted(line["custom_id"] for line in errors) == ["r2", "r3", "r4"]
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    assert all(line["response"] is None for line in errors)


async def test_a_cancelled_openai_batch(gpt: openai.AsyncOpenAI, clock: ManualClock) -> None:
    batch = await openai_batch(gpt, [jsonl_line(f"r{i}", f"Q{i}?") for i in range(5)])
    clock.advance(2)
    batch = await gpt.batches.cancel(batch.id)
    assert batch.status == "cancelling" and batch.cancelling_at and batch.output_file_id is None
    clock.advance(1)
    batch = await gpt.batches.retrieve(batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at and batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (5, 2)
    assert len(await lines_of(gpt, batch.output_file_id)) == 2
    errors = await lines_of(gpt, batch.error_file_id)
    assert len(errors) == 3 and {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        await gpt.batches.cancel(batch.id)


async def test_openai_batches_list_newest_first_a_page_at_a_time(
        gpt: openai.AsyncOpenAI, openai_server: FakeOpenAI) -> None:
    created = [(await openai_batch(gpt, [jsonl_line("r", "Q?")])).id for _ in range(5)]
    first = await gpt.batches.list(limit=2)
    assert [b.id for b in first.data] == created[::-1][:2] and first.has_more
    second = await gpt.batches.list(limit=2, after=first.data[-1].id)
    assert [b.id for b in second.data] == created[::-1][2:4]
    assert [b.id async for b in gpt.batches.list(limit=2)] == created[::-1]  # the SDK's own paging
    assert openai_server.calls.count("GET /v1/batches") == 2 + 3


async def test_a_failed_call_and_a_restart_mid_batch(
        gpt: openai.AsyncOpenAI, openai_server: FakeOpenAI, clock: ManualClock) -> None:
    batch = await openai_batch(gpt, [jsonl_line(f"r{i}", f"Q{i}?") for i in range(4)])
    clock.advance(2)
    openai_server.fail_call("GET /v1/batches/*", Fail(503, "down for maintenance"))
    with pytest.raises(openai.InternalServerError):
        await gpt.batches.retrieve(batch.id)
    port = openai_server.port
    await openai_server.close()
    with pytest.raises(openai.APIConnectionError):
        await gpt.batches.retrieve(batch.id)
    clock.advance(10)  # the batch went on while the server was down
    await openai_server.start(port=port)
    batch = await gpt.batches.retrieve(batch.id)
    assert batch.status == "completed" and len(await lines_of(gpt, batch.output_file_id)) == 4
    await openai_server.restart()
    assert (await gpt.batches.retrieve(batch.id)).status == "completed"


async def test_batched_requests_share_the_script_and_the_automatic_cache(
        gpt: openai.AsyncOpenAI, openai_server: FakeOpenAI) -> None:
    openai_server.auto_cache, openai_server.min_cache_tokens = True, 10
    openai_server.batch_step_seconds = 0
    openai_server.script("scripted")
    lines = [json.dumps({"custom_id": f"r{i}", "method": "POST", "url": ENDPOINT,
                         "body": {"model": MODEL, "messages": [{"role": "system", "content": SYSTEM},
                                                               {"role": "user", "content": f"Q{i}?"}]}})
             for i in range(3)]
    batch = await gpt.batches.retrieve((await openai_batch(gpt, lines)).id)
    bodies = {line["custom_id"]: line["response"]["body"] for line in await lines_of(gpt, batch.output_file_id)}
    assert bodies["r0"]["choices"][0]["message"]["content"] == "scripted"
    assert "prompt_tokens_details" not in bodies["r0"]["usage"]  # the first one only writes
    assert [bodies[f"r{i}"]["usage"]["prompt_tokens_details"]["cached_tokens"] for i in (1, 2)] == [12, 12]
    assert batch.usage is not None and batch.usage.input_tokens_details.cached_tokens == 24


# -- Anthropic Message Batches


def params(content: str, *, model: str = CLAUDE, **extra: Any) -> Any:
    return {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": content}], **extra}


async def results_of(claude: anthropic.AsyncAnthropic, batch_id: str) -> list[Any]:
    return [entry async for entry in await claude.messages.batches.results(batch_id)]


async def test_an_anthropic_batch_in_progress_then_ended_with_results_out_of_order(
        claude: anthropic.AsyncAnthropic, anthropic_server: FakeAnthropic, clock: ManualClock) -> None:
    ids = [f"q-{i}" for i in range(5)]
    batch = await claude.messages.batches.create(requests=[{"custom_id": i, "params": params(f"Q{i[-1]}?")}
                                                           for i in ids])
    assert batch.processing_status == "in_progress" and batch.results_url is None and batch.ended_at is None
    assert batch.request_counts.processing == 5 and batch.expires_at > batch.created_at
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        await claude.messages.batches.results(batch.id)
    for _ in range(2):
        clock.advance(1)
        batch = await claude.messages.batches.retrieve(batch.id)
        # as documented, the other counts stay 0 until the batch has ended
        assert batch.processing_status == "in_progress" and batch.request_counts.processing == 5
    clock.advance(1)
    batch = await claude.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended" and batch.ended_at and batch.results_url
    assert batch.request_counts.succeeded == 5 and batch.request_counts.processing == 0
    results = await results_of(claude, batch.id)
    assert [r.custom_id for r in results] != ids and sorted(r.custom_id for r in results) == ids
    for entry in results:
        assert entry.result.type == "succeeded"
        message = entry.result.message
        assert message.content[0].text == f"Answer to Q{entry.custom_id[-1]}?"
        assert message.usage.service_tier == "batch" and message.usage.input_tokens == 1
    assert [r.body["messages"][0]["content"] for r in anthropic_server.batch_received] == [f"Q{i}?" for i in range(5)]
    deleted = await claude.messages.batches.delete(batch.id)
    assert deleted.id == batch.id
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.retrieve(batch.id)


async def test_an_invalid_request_errors_alone_and_a_duplicate_id_refuses_the_batch(
        claude: anthropic.AsyncAnthropic, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.batch_step_seconds = 0
    anthropic_server.models = {CLAUDE}
    anthropic_server.script(Fail(529, "Overloaded"), "fine")
    no_max_tokens: Any = {"model": CLAUDE, "messages": [{"role": "user", "content": "Q?"}]}
    batch = await claude.messages.batches.create(requests=[
        {"custom_id": "overloaded", "params": params("Q0?")}, {"custom_id": "fine", "params": params("Q1?")},
        {"custom_id": "invalid", "params": no_max_tokens}, {"custom_id": "unknown-model",
                                                           "params": params("Q?", model="claude-nope")}])
    batch = await claude.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended"
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (1, 3)
    results = {entry.custom_id: entry.result for entry in await results_of(claude, batch.id)}
    assert results["fine"].type == "succeeded"
    errors = {key: (r.error.error.type, r.error.error.message) for key, r in results.items() if r.type == "errored"}
    assert errors == {"overloaded": ("overloaded_error", "Overloaded"),
                      "invalid": ("invalid_request_error", "max_tokens: Field required"),
                      "unknown-model": ("not_found_error", "model: claude-nope")}

    with pytest.raises(anthropic.BadRequestError, match="Duplicate custom_id"):
        await claude.messages.batches.create(requests=[{"custom_id": "x", "params": params("Q?")}] * 2)
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        await claude.messages.batches.create(requests=[{"custom_id": "not ok!", "params": params("Q?")}])
    assert len(anthropic_server.batches) == 1


async def test_a_canceled_anthropic_batch(claude: anthropic.AsyncAnthropic, clock: ManualClock) -> None:
    batch = await claude.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": params(f"Q{i}?")}
                                                           for i in range(5)])
    clock.advance(1)  # two answered
    batch = await claude.messages.batches.cancel(batch.id)
    assert batch.processing_status == "canceling" and batch.cancel_initiated_at and batch.results_url is None
    clock.advance(1)
    batch = await claude.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended"
    assert (batch.request_counts.succeeded, batch.request_counts.canceled) == (2, 3)
    kinds = sorted(entry.result.type for entry in await results_of(claude, batch.id))
    assert kinds == ["canceled"] * 3 + ["succeeded"] * 2
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.batches.cancel(batch.id)


async def test_anthropic_batches_expire(claude: anthropic.AsyncAnthropic, anthropic_server: FakeAnthropic,
                                        clock: ManualClock) -> None:
    held, forced = [(await claude.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": params("Q?")}
                                                                    for i in range(3)])).id for _ in range(2)]
    clock.advance(1)
    anthropic_server.hold(held)
    anthropic_server.expire(forced)
    forced_batch = await claude.messages.batches.retrieve(forced)
    assert forced_batch.processing_status == "ended"
    assert (forced_batch.request_counts.succeeded, forced_batch.request_counts.expired) == (2, 1)
    clock.advance(23 * 3600)
    assert (await claude.messages.batches.retrieve(held)).processing_status == "in_progress"
    clock.advance(3600)
    batch = await claude.messages.batches.retrieve(held)
    assert batch.processing_status == "ended" and batch.ended_at == batch.expires_at
    assert (batch.request_counts.succeeded, batch.request_counts.expired) == (2, 1)
    assert sorted(entry.result.type for entry in await results_of(claude, held)) == ["expired", "succeeded",
                                                                                     "succeeded"]


async def test_anthropic_batches_list_newest_first_a_page_at_a_time(claude: anthropic.AsyncAnthropic) -> None:
    created = [(await claude.messages.batches.create(requests=[{"custom_id": "r", "params": params("Q?")}])).id
               for _ in range(5)]
    newest_first = created[::-1]
    first = await claude.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == newest_first[:2] and first.has_more
    assert (first.first_id, first.last_id) == (newest_first[0], newest_first[1])
    after = await claude.messages.batches.list(limit=2, after_id=newest_first[3])
    assert [b.id for b in after.data] == newest_first[4:] and not after.has_more
    before = await claude.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in before.data] == newest_first[1:3] and before.has_more
    assert [b.id async for b in claude.messages.batches.list(limit=2)] == newest_first


async def test_an_anthropic_restart_mid_batch_and_finish_now(
        claude: anthropic.AsyncAnthropic, anthropic_server: FakeAnthropic, clock: ManualClock) -> None:
    batch = await claude.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": params(f"Q{i}?")}
                                                           for i in range(6)])
    clock.advance(1)
    await anthropic_server.restart()
    assert (await claude.messages.batches.retrieve(batch.id)).processing_status == "in_progress"
    anthropic_server.hold(batch.id)
    anthropic_server.finish_now(batch.id)  # hold or not
    batch = await claude.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended" and batch.request_counts.succeeded == 6
    assert len(await results_of(claude, batch.id)) == 6


async def test_batches_of_a_provider_in_a_thread_with_a_real_clock() -> None:
    runner = ProviderThread(FakeAnthropic())
    server = runner.start()
    server.batch_step_seconds, server.batch_requests_per_step = 0.005, 1
    server.default = lambda body: Reply(f"Answer to {question(body)}")
    client = anthropic.AsyncAnthropic(api_key=TEST_KEY, base_url=server.url, max_retries=0)
    try:
        batch = await client.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": params(f"Q{i}?")}
                                                               for i in range(3)])
        runner.restart()
        for _ in range(2000):
            batch = await client.messages.batches.retrieve(batch.id)
            if batch.processing_status == "ended":
                break
        assert batch.processing_status == "ended" and batch.request_counts.succeeded == 3
        assert runner.call(lambda: len(server.batch_received)) == 3
    finally:
        await client.close()
        runner.stop()


# -- count_tokens and the automatic prompt cache


def system_prompt(text: str = SYSTEM, **control: Any) -> Any:
    return [{"type": "text", "text": text, "cache_control": {**EPHEMERAL, **control}}]


async def ask(claude: anthropic.AsyncAnthropic, content: str = "Q?", *, system: Any = None, model: str = CLAUDE,
              messages: Any = None) -> tuple[int, int, int]:
    """(input, cache read, cache write) of one request."""
    usage = (await claude.messages.create(model=model, max_tokens=20, system=system or system_prompt(),
                                          messages=messages or [{"role": "user", "content": content}])).usage
    return usage.input_tokens, usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens or 0


async def test_count_tokens_is_the_whole_prompt_of_the_usage(claude: anthropic.AsyncAnthropic,
                                                             anthropic_server: FakeAnthropic) -> None:
    anthropic_server.auto_cache, anthropic_server.min_cache_tokens = True, 10
    messages: Any = [{"role": "user", "content": "What is two plus two?"}]
    tools: Any = [{"name": "calc", "description": "Adds", "input_schema": {"type": "object"}}]
    counted = await claude.messages.count_tokens(model=CLAUDE, system=system_prompt(), messages=messages, tools=tools)
    assert counted.input_tokens == 12 + 5
    for _ in range(2):  # written, then read: the total is the same
        usage = (await claude.messages.create(model=CLAUDE, max_tokens=20, system=system_prompt(),
                                              messages=messages, tools=tools)).usage
        total = usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
        assert total == counted.input_tokens
    assert anthropic_server.received[0].body["tools"] == tools and len(anthropic_server.received) == 2
    with pytest.raises(anthropic.AuthenticationError):
        await claude.with_options(api_key="sk-wrong").messages.count_tokens(model=CLAUDE, messages=messages)


async def test_the_anthropic_cache_reads_only_a_byte_identical_prefix(
        claude: anthropic.AsyncAnthropic, anthropic_server: FakeAnthropic, clock: ManualClock) -> None:
    anthropic_server.auto_cache, anthropic_server.min_cache_tokens = True, 10
    assert await ask(claude, "First question?") == (2, 0, 12)  # written
    assert await ask(claude, "Second question?") == (2, 12, 0)  # read: only the question is new
    assert await ask(claude, system=system_prompt(SYSTEM.replace(".", "!"))) == (1, 0, 12)  # one byte: written anew
    assert await ask(claude, model="claude-other") == (1, 0, 12)  # another model's cache
    assert await ask(claude, system=system_prompt("Too short to cache.")) == (5, 0, 0)  # under min_cache_tokens
    anthropic_server.script(Reply("set by hand", cache_read=3))
    assert await ask(claude) == (10, 3, 0)  # an explicit Reply wins


async def test_the_anthropic_cache_expires_with_its_ttl(
        claude: anthropic.AsyncAnthropic, anthropic_server: FakeAnthropic, clock: ManualClock) -> None:
    anthropic_server.auto_cache, anthropic_server.min_cache_tokens = True, 10
    assert await ask(claude) == (1, 0, 12)
    clock.advance(299)
    assert await ask(claude) == (1, 12, 0)  # a read refreshes the 5 minutes
    clock.advance(299)
    assert await ask(claude) == (1, 12, 0)
    clock.advance(301)
    assert await ask(claude) == (1, 0, 12)  # gone: written again
    clock.advance(301)
    hour = system_prompt(ttl="1h")
    response = await claude.messages.create(model=CLAUDE, max_tokens=20, system=hour,
                                            messages=[{"role": "user", "content": "Q?"}])
    assert response.usage.cache_creation is not None and response.usage.cache_creation.ephemeral_1h_input_tokens == 12
    clock.advance(1800)
    assert await ask(claude, system=hour) == (1, 12, 0)
    clock.advance(3601)
    assert await ask(claude, system=hour) == (1, 0, 12)


async def test_the_longest_cached_breakpoint_wins(claude: anthropic.AsyncAnthropic,
                                                  anthropic_server: FakeAnthropic) -> None:
    anthropic_server.auto_cache, anthropic_server.min_cache_tokens = True, 10

    def conversation(last: str) -> list[dict[str, Any]]:
        marked = {"type": "text", "text": "Here is the long shared document to study.", "cache_control": EPHEMERAL}
        return [{"role": "user", "content": [marked]}, {"role": "assistant", "content": "Read."},
                {"role": "user", "content": last}]

    assert await ask(claude, messages=conversation("Q1?")) == (2, 0, 20)  # both breakpoints written
    assert await ask(claude, messages=conversation("Q2?")) == (2, 20, 0)  # the longer one read
    changed = conversation("Q3?")
    changed[0]["content"][0]["text"] += " Twice."
    assert await ask(claude, messages=changed) == (2, 12, 9)  # the system read, the rest written
    # breakpoints on neither the system nor the document: found looking back from the last message's
    unmarked = conversation("")
    unmarked[0]["content"][0].pop("cache_control")
    unmarked[2]["content"] = [{"type": "text", "text": "Q4?", "cache_control": EPHEMERAL}]
    assert await ask(claude, system=SYSTEM, messages=unmarked) == (0, 20, 2)


async def test_the_openai_cache_reads_the_longest_prefix_seen(
        openai_server: FakeOpenAI, gpt: openai.AsyncOpenAI, clock: ManualClock) -> None:
    openai_server.auto_cache, openai_server.min_cache_tokens = True, 10

    async def cached(system: str = SYSTEM, content: str = "Q?") -> tuple[int, int]:
        usage = (await gpt.chat.completions.create(model=MODEL, messages=[
            {"role": "system", "content": system}, {"role": "user", "content": content}])).usage
        assert usage is not None
        details = usage.prompt_tokens_details
        return usage.prompt_tokens, details.cached_tokens or 0 if details is not None else 0

    assert await cached() == (13, 0)
    assert await cached(content="Another question?") == (14, 12)  # counted in prompt_tokens too
    assert await cached(content="Another question?") == (14, 14)
    assert await cached(SYSTEM.replace("full", "fuller")) == (13, 0)  # one byte differs
    assert await cached("Short.", "Q?") == (2, 0)
    clock.advance(openai_server.cache_ttl_seconds + 1)
    assert await cached() == (13, 0)
