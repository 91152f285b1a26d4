"""LLMClient.chat against the fake providers: whole conversations, tools, finish reasons, failure classes."""

from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from stimserver.llm import ChatAnswer, LLMClient, LLMError, Usage
from stimserver.llm.chat import anthropic_messages, anthropic_tools
from stimserver.llm.wire import anthropic_tokens, openai_tokens

from .fake_providers import Fail, FakeAnthropic, FakeProvider, Reply

MakeClient = Callable[[Mapping[str, str]], LLMClient]
FAST = {"STIMSERVER_LLM_TIMEOUT": "5", "STIMSERVER_LLM_MAX_RETRIES": "2"}
CLAUDE = "claude-sonnet-4-6"
LOCAL = "llama3.1:8b"

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}]
WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}
EPHEMERAL = {"type": "ephemeral"}


@pytest.fixture(params=["anthropic", "openai"])
def server(request: pytest.FixtureRequest) -> FakeProvider:
    return request.getfixturevalue(f"{request.param}_server")


def model_for(server: FakeProvider) -> str:
    return CLAUDE if isinstance(server, FakeAnthropic) else LOCAL


async def chat(client: LLMClient, server: FakeProvider, *, tools: list[dict[str, Any]] | None = None,
               messages: list[dict[str, Any]] = MESSAGES, usage: Usage | None = None) -> ChatAnswer:
    return await client.chat(model=model_for(server), messages=messages, tools=tools, temperature=0.5,
                             max_tokens=50, extra_kwargs={}, usage=usage)


async def test_a_conversation_in_one_reply_out(server: FakeProvider, make_client: MakeClient) -> None:
    server.script("Four.")
    usage = Usage()
    answer = await chat(make_client({**server.env(), **FAST}), server, usage=usage)
    assert answer.text == "Four." and answer.finish_reason == "stop" and answer.tool_calls == ()
    response = answer.response()
    assert response == {"role": "assistant", "content": "Four.", "finish_reason": "stop",
                        "usage": {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7}}
    assert usage.requests == 1 and usage.input_tokens == 6 and usage.output_tokens == 1
    (sent,) = server.received
    if isinstance(server, FakeAnthropic):  # the system message moves to `system`, marked for the prompt cache
        assert sent.body["system"] == [{"type": "text", "text": "You are terse.", "cache_control": EPHEMERAL}]
        assert sent.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}]
        assert sent.body["temperature"] == 0.5 and sent.body["max_tokens"] == 50
    else:  # as they are
        assert sent.body["messages"] == MESSAGES and sent.body["temperature"] == 0.5
    assert "tools" not in sent.body


async def test_tools_go_out_in_each_protocols_shape_and_calls_come_back_openai_style(
        server: FakeProvider, make_client: MakeClient) -> None:
    server.script(Reply("", tool_calls=(("weather", {"city": "Oslo"}),)))
    answer = await chat(make_client({**server.env(), **FAST}), server, tools=[WEATHER])
    assert answer.text == "" and answer.finish_reason == "tool_calls"  # empty text with a call: a valid answer
    (call,) = answer.tool_calls
    assert call["type"] == "function" and call["function"]["name"] == "weather"
    assert call["function"]["arguments"].replace(" ", "") == '{"city":"Oslo"}' and call["id"]
    assert answer.response()["tool_calls"] == [call]
    (sent,) = server.received
    if isinstance(server, FakeAnthropic):
        assert sent.body["tools"] == [{"name": "weather", "description": "Weather in a city",
                                       "input_schema": WEATHER["function"]["parameters"], "cache_control": EPHEMERAL}]
    else:
        assert sent.body["tools"] == [WEATHER]


@pytest.mark.parametrize("stop, expected", [("max_tokens", "length"), ("end_turn", "stop"),
                                            ("stop_sequence", "stop")])
async def test_anthropic_stop_reasons_are_normalised(anthropic_server: FakeAnthropic, make_client: MakeClient,
                                                     stop: str, expected: str) -> None:
    anthropic_server.script(Reply("Four", stop=stop))
    answer = await chat(make_client({**anthropic_server.env(), **FAST}), anthropic_server)
    assert answer.finish_reason == expected


async def test_a_tool_conversation_converts_for_anthropic() -> None:
    messages = [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
    ]
    system, turns = anthropic_messages(messages)
    assert system == "Use tools."
    assert turns == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "rain"}]},
    ]
    anthropic_shaped = {"name": "x", "input_schema": {"type": "object"}}
    assert anthropic_tools([anthropic_shaped]) == [anthropic_shaped]


@pytest.mark.parametrize("fail", [Fail(400, "prompt is too long: 250000 tokens > 200000 maximum"),
                                  Fail(413, "request too large"), Fail(422, "unprocessable")],
                         ids=["400", "413", "422"])
async def test_a_request_the_provider_rejects_alone_is_marked_rejected(
        server: FakeProvider, make_client: MakeClient, fail: Fail) -> None:
    server.script(fail)
    with pytest.raises(LLMError) as caught:
        await chat(make_client({**server.env(), **FAST}), server)
    assert caught.value.rejected and not caught.value.transient and caught.value.status == fail.status
    assert len(server.received) == 1  # never retried


@pytest.mark.parametrize("reply", [Reply(""), Reply("I can't", stop="refusal")], ids=["empty", "refusal"])
async def test_empty_and_refused_answers_are_rejections(anthropic_server: FakeAnthropic, make_client: MakeClient,
                                                        reply: Reply) -> None:
    anthropic_server.script(reply)
    with pytest.raises(LLMError) as caught:
        await chat(make_client({**anthropic_server.env(), **FAST}), anthropic_server)
    assert caught.value.rejected


@pytest.mark.parametrize("reply", [Reply("", stop="content_filter"), Reply("", refusal="no"), Reply("")],
                         ids=["content-filter", "refusal", "empty"])
async def test_openai_filters_refusals_and_empty_answers_are_rejections(
        openai_server: FakeProvider, make_client: MakeClient, reply: Reply) -> None:
    openai_server.script(reply)
    with pytest.raises(LLMError) as caught:
        await chat(make_client({**openai_server.env(), **FAST}), openai_server)
    assert caught.value.rejected


@pytest.mark.parametrize("fail, words", [(Fail(401, "bad key"), "API key"), (Fail(403, "no access"), "denied"),
                                         (Fail(404, "no such model"), "not found")],
                         ids=["401", "403", "404"])
async def test_failures_that_doom_every_request_are_not_rejections(
        server: FakeProvider, make_client: MakeClient, fail: Fail, words: str) -> None:
    server.script(fail)
    with pytest.raises(LLMError, match=words) as caught:
        await chat(make_client({**server.env(), **FAST}), server)
    assert not caught.value.rejected and not caught.value.transient


async def test_transient_failures_are_retried_by_the_limiter(server: FakeProvider, make_client: MakeClient) -> None:
    server.script(Fail(503, "busy"), Fail(429, "slow", retry_after=0.01), "Four.")
    usage = Usage()
    answer = await chat(make_client({**server.env(), **FAST}), server, usage=usage)
    assert answer.text == "Four." and len(server.received) == 3 and usage.retries == 2


async def test_no_credentials_is_not_a_rejection(make_client: MakeClient) -> None:
    with pytest.raises(LLMError, match="no credentials") as caught:
        await make_client({}).chat(model=LOCAL, messages=MESSAGES, temperature=None, max_tokens=None,
                                   extra_kwargs=None)
    assert not caught.value.rejected


async def test_extra_kwargs_may_not_replace_the_prompts_tools(openai_server: FakeProvider,
                                                              make_client: MakeClient) -> None:
    client = make_client({**openai_server.env(), **FAST})
    with pytest.raises(LLMError, match="tools come from the prompt"):
        await client.chat(model=LOCAL, messages=MESSAGES, tools=[WEATHER], temperature=None, max_tokens=None,
                          extra_kwargs={"tools": []})
    assert openai_server.received == []


# -- prompt caching ---------------------------------------------------------------------------

CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}
FEW_SHOT = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "Two."},
            {"role": "user", "content": "What is 2+2?"}]


def controls(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """Where a Messages API request carries cache_control: (place, the control) in request order."""
    found = [(f"tool {tool['name']}", tool["cache_control"]) for tool in body.get("tools", [])
             if "cache_control" in tool]
    if isinstance(body.get("system"), list):
        found += [("system", block["cache_control"]) for block in body["system"] if "cache_control" in block]
    for i, message in enumerate(body["messages"]):
        found += [(f"message {i} block {j}", block["cache_control"]) for j, block in enumerate(message["content"])
                  if "cache_control" in block]
    return found


@pytest.mark.parametrize("setting, control", [(None, EPHEMERAL), ("5m", EPHEMERAL),
                                              ("1h", {"type": "ephemeral", "ttl": "1h"})])
async def test_anthropic_marks_the_shared_prefix_for_the_prompt_cache(
        anthropic_server: FakeAnthropic, make_client: MakeClient, setting: str | None, control: dict[str, str]) -> None:
    env = {**anthropic_server.env(), **FAST, **({"STIMSERVER_ANTHROPIC_CACHE": setting} if setting else {})}
    messages = [dict(m) for m in FEW_SHOT]
    await chat(make_client(env), anthropic_server, tools=[WEATHER, CLOCK], messages=messages)
    (sent,) = anthropic_server.received
    # the last tool, the system prompt, and the few-shot answer before the question; never the question
    assert controls(sent.body) == [("tool clock", control), ("system", control), ("message 1 block 0", control)]
    assert sent.body["system"] == [{"type": "text", "text": "You are terse.", "cache_control": control}]
    assert sent.body["messages"][1] == {"role": "assistant",
                                        "content": [{"type": "text", "text": "Two.", "cache_control": control}]}
    assert sent.body["messages"][2] == {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}
    assert messages == FEW_SHOT and "cache_control" not in CLOCK  # the prompt itself is left as it was


async def test_a_single_question_marks_only_the_system_prompt(anthropic_server: FakeAnthropic,
                                                              make_client: MakeClient) -> None:
    await chat(make_client({**anthropic_server.env(), **FAST}), anthropic_server)
    (sent,) = anthropic_server.received
    assert controls(sent.body) == [("system", EPHEMERAL)]


async def test_cache_off_sends_no_cache_control(anthropic_server: FakeAnthropic, make_client: MakeClient) -> None:
    env = {**anthropic_server.env(), **FAST, "STIMSERVER_ANTHROPIC_CACHE": "off"}
    await chat(make_client(env), anthropic_server, tools=[WEATHER], messages=FEW_SHOT)
    (sent,) = anthropic_server.received
    assert controls(sent.body) == [] and sent.body["system"] == "You are terse."


async def test_breakpoints_the_prompt_already_has_count_against_the_limit_of_four(
        anthropic_server: FakeAnthropic, make_client: MakeClient) -> None:
    own = {"type": "ephemeral"}
    tools = [{"name": f"t{i}", "input_schema": {"type": "object"}, "cache_control": own} for i in range(2)]
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Context.", "cache_control": own}]},
                {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "What is 2+2?"}]
    answer = await chat(make_client({**anthropic_server.env(), **FAST}), anthropic_server, tools=tools,
                        messages=messages)
    assert answer.text == "ok"  # the fake, like the API, answers 400 to a fifth breakpoint
    (sent,) = anthropic_server.received
    assert controls(sent.body) == [("tool t0", own), ("tool t1", own), ("message 0 block 0", own),
                                   ("message 1 block 0", EPHEMERAL)]  # three were there: only the few-shot one
    assert sent.body["system"] == "You are terse."


async def test_cached_tokens_are_normalised_and_never_counted_twice(server: FakeProvider,
                                                                   make_client: MakeClient) -> None:
    anthropic = isinstance(server, FakeAnthropic)
    server.script(Reply("Four.", cache_read=3, cache_write=2 if anthropic else 0), "Five.")
    usage = Usage()
    client = make_client({**server.env(), **FAST})
    answer = await chat(client, server, usage=usage)
    # 6 prompt words in all; Anthropic said input_tokens=1 beside 3 read and 2 written, OpenAI prompt_tokens=6
    assert (answer.input_tokens, answer.cached_input_tokens, answer.cache_write_tokens) == (6, 3, 2 if anthropic else 0)
    assert answer.response()["usage"] == {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7,
                                          "cached_tokens": 3}
    second = await chat(client, server, usage=usage)
    assert "cached_tokens" not in second.response()["usage"]  # only when some were cached
    counts = {k: v for k, v in usage.as_dict().items() if k not in ("cost_usd", "price_table", "cost_unknown")}
    assert counts == {"requests": 2, "input_tokens": 12, "output_tokens": 2, "retries": 0,
                      "rate_limited": 0, "cached_input_tokens": 3, "cache_write_tokens": 2 if anthropic else 0}


def test_usage_conventions_read_by_hand() -> None:
    anthropic = SimpleNamespace(input_tokens=10, output_tokens=4, cache_read_input_tokens=900,
                                cache_creation_input_tokens=90)
    assert anthropic_tokens(anthropic) == {"input_tokens": 1000, "output_tokens": 4, "cached_input_tokens": 900,
                                           "cache_write_tokens": 90}
    assert anthropic_tokens(SimpleNamespace(input_tokens=10, output_tokens=4, cache_read_input_tokens=None)) == {
        "input_tokens": 10, "output_tokens": 4, "cached_input_tokens": 0, "cache_write_tokens": 0}
    openai = SimpleNamespace(prompt_tokens=1000, completion_tokens=4,
                             prompt_tokens_details=SimpleNamespace(cached_tokens=896))
    assert openai_tokens(openai) == {"input_tokens": 1000, "output_tokens": 4, "cached_input_tokens": 896,
                                     "cache_write_tokens": 0}
    vllm = SimpleNamespace(prompt_tokens=12, completion_tokens=4, prompt_tokens_details=None)
    assert openai_tokens(vllm)["cached_input_tokens"] == 0
    wrong = SimpleNamespace(prompt_tokens=12, completion_tokens=4,
                            prompt_tokens_details=SimpleNamespace(cached_tokens=50))
    assert openai_tokens(wrong)["cached_input_tokens"] == 12  # never more than the prompt
    assert openai_tokens(None) == {"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0,
                                   "cache_write_tokens": 0}
