"""LLMClient.chat against the fake providers: whole conversations, tools, finish reasons, failure classes."""

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from stimserver.llm import ChatAnswer, LLMClient, LLMError, Usage
from stimserver.llm.chat import anthropic_messages, anthropic_tools

from .fake_providers import Fail, FakeAnthropic, FakeProvider, Reply

MakeClient = Callable[[Mapping[str, str]], LLMClient]
FAST = {"STIMSERVER_LLM_TIMEOUT": "5", "STIMSERVER_LLM_MAX_RETRIES": "2"}
CLAUDE = "claude-sonnet-4-6"
LOCAL = "llama3.1:8b"

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}]
WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}


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
    if isinstance(server, FakeAnthropic):  # the system message moves to `system`
        assert sent.body["system"] == "You are terse."
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
                                       "input_schema": WEATHER["function"]["parameters"]}]
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
