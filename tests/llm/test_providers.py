"""LLMConfig from Settings and LLMClient against the fake providers: routing, wire format, retries, errors."""

import logging
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from stimserver.config import Settings
from stimserver.llm import DEFAULT_MAX_TOKENS, LLMClient, LLMConfig, LLMError
from stimserver.llm.providers import client_factory

from .fake_providers import TEST_KEY, Fail, FakeAnthropic, FakeOpenAI, FakeProvider, Raw, Reply, Slow

MakeClient = Callable[[Mapping[str, str]], LLMClient]
FAST = {"STIMSERVER_LLM_TIMEOUT": "5", "STIMSERVER_LLM_MAX_RETRIES": "2"}
CLAUDE = "claude-sonnet-4-6"  # not on the SDK's deprecated list, which warns
LOCAL = "llama3.1:8b"


RETRY_LOG = re.compile(r"LLM request failed: .* status=429 attempt=\d \(retry in ([\d.]+) s\)")


def model_for(server: FakeProvider) -> str:
    return CLAUDE if isinstance(server, FakeAnthropic) else LOCAL


@pytest.fixture(params=["anthropic", "openai"])
def server(request: pytest.FixtureRequest) -> FakeProvider:
    """Each test using this runs against each provider, unless it picks one with `indirect`."""
    return request.getfixturevalue(f"{request.param}_server")


async def ask(
    client: LLMClient,
    model: str,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
    extra_kwargs: Any = None,  # Any: some tests send what the SDKs must refuse
) -> str:
    return await client.complete(
        model=model, prompt="Say hi", temperature=temperature, max_tokens=max_tokens, extra_kwargs=extra_kwargs
    )


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- configuration -------------------------------------------------------------------------


def config_from(environ: Mapping[str, str]) -> LLMConfig:
    """The LLM configuration a server started with ``environ`` uses."""
    return LLMConfig.from_settings(Settings.from_env(environ))


def test_defaults() -> None:
    assert config_from({}) == LLMConfig(provider="auto", timeout=120.0, max_retries=4)


def test_settings_read_every_variable() -> None:
    config = config_from(
        {
            "ANTHROPIC_API_KEY": "a-key",
            "ANTHROPIC_BASE_URL": "http://a",
            "OPENAI_API_KEY": "o-key",
            "OPENAI_BASE_URL": "http://o/v1",
            "STIMSERVER_LLM_PROVIDER": "OpenAI",
            "STIMSERVER_LLM_TIMEOUT": "2.5",
            "STIMSERVER_LLM_MAX_RETRIES": "0",
            "STIMSERVER_OPENAI_SERVER": "transformers",
            "STIMSERVER_ANTHROPIC_CACHE": "1H",
        }
    )
    assert config == LLMConfig("openai", "a-key", "http://a", "o-key", "http://o/v1", "transformers", 2.5, 0,
                               anthropic_cache="1h")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STIMSERVER_LLM_PROVIDER", "gemini"),
        ("STIMSERVER_LLM_TIMEOUT", "soon"),
        ("STIMSERVER_LLM_TIMEOUT", "0"),
        ("STIMSERVER_LLM_TIMEOUT", "nan"),
        ("STIMSERVER_LLM_MAX_RETRIES", "-1"),
        ("STIMSERVER_LLM_MAX_RETRIES", "2.5"),
        ("STIMSERVER_ANTHROPIC_CACHE", "24h"),
    ],
    ids=["unknown-provider", "timeout-text", "timeout-zero", "timeout-nan", "retries-negative", "retries-float",
         "cache-ttl"],
)
def test_settings_reject_bad_values(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_empty_values_count_as_unset() -> None:
    blank = {"STIMSERVER_LLM_PROVIDER": "", "STIMSERVER_LLM_TIMEOUT": " ", "OPENAI_API_KEY": ""}
    assert config_from(blank) == config_from({})


async def test_client_factory_builds_clients_from_settings() -> None:
    make = client_factory(Settings.from_env({"OPENAI_BASE_URL": "http://o/v1", "STIMSERVER_LLM_TIMEOUT": "3"}))
    first, second = make(), make()
    assert isinstance(first, LLMClient) and first is not second
    await first.aclose()
    await second.aclose()


def test_repr_hides_keys() -> None:
    settings = Settings.from_env({"ANTHROPIC_API_KEY": "secret-a", "OPENAI_API_KEY": "secret-o"})
    config = LLMConfig.from_settings(settings)
    assert "secret" not in repr(config) and "secret" not in repr(settings)
    assert "secret" not in repr(settings.openai_api_key) and config.openai_api_key == "secret-o"


@pytest.mark.parametrize(
    ("choice", "model", "expected"),
    [
        ("auto", CLAUDE, "anthropic"),
        ("auto", "gpt-4o-mini", "openai"),
        ("auto", LOCAL, "openai"),
        ("openai", CLAUDE, "openai"),
        ("anthropic", LOCAL, "anthropic"),
    ],
    ids=["auto-claude", "auto-gpt", "auto-local", "forced-openai", "forced-anthropic"],
)
def test_provider_for(choice: str, model: str, expected: str) -> None:
    assert config_from({"STIMSERVER_LLM_PROVIDER": choice}).provider_for(model) == expected


# --- routing and the wire format -----------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "model", "expected"),
    [
        ("auto", CLAUDE, "anthropic"),
        ("auto", LOCAL, "openai"),
        ("openai", CLAUDE, "openai"),
        ("anthropic", LOCAL, "anthropic"),
    ],
    ids=["auto-claude", "auto-local", "forced-openai", "forced-anthropic"],
)
async def test_requests_reach_the_chosen_provider(
    make_client: MakeClient,
    anthropic_server: FakeAnthropic,
    openai_server: FakeOpenAI,
    choice: str,
    model: str,
    expected: str,
) -> None:
    client = make_client({**anthropic_server.env(), **openai_server.env(), "STIMSERVER_LLM_PROVIDER": choice})
    assert await ask(client, model) == "ok"
    counts = {"anthropic": len(anthropic_server.received), "openai": len(openai_server.received)}
    assert counts == {"anthropic": 1, "openai": 0} if expected == "anthropic" else {"anthropic": 0, "openai": 1}


async def test_anthropic_wire_request(make_client: MakeClient, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script("Hello there")
    client = make_client(anthropic_server.env())
    extra = {"system": "Be brief.", "stop_sequences": ["END"], "metadata": {"user_id": "u1"}}
    assert await ask(client, CLAUDE, temperature=0.3, max_tokens=77, extra_kwargs=extra) == "Hello there"

    (request,) = anthropic_server.received
    assert request.body == {
        "model": CLAUDE,
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 77,
        "temperature": 0.3,
        **extra,
    }
    assert TEST_KEY in (request.headers.get("x-api-key"), request.headers.get("authorization", "")[7:])
    # Sampling parameters are only accepted by this API version (the fake enforces it too).
    assert request.headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("temperature", [None, 1.0], ids=["unset", "api-default"])
async def test_anthropic_defaults(
    make_client: MakeClient, anthropic_server: FakeAnthropic, temperature: float | None
) -> None:
    await ask(make_client(anthropic_server.env()), CLAUDE, temperature=temperature)
    (request,) = anthropic_server.received
    assert request.body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert "temperature" not in request.body
    assert request.headers["anthropic-version"] != "2023-06-01"


@pytest.mark.filterwarnings(r"ignore:The model '.*' is deprecated:DeprecationWarning")
async def test_deprecated_model_still_answers(make_client: MakeClient, anthropic_server: FakeAnthropic) -> None:
    # The SDK warns about deprecated models (API.md's example is one); that must not fail a job.
    assert await ask(make_client(anthropic_server.env()), "claude-sonnet-4-5-20250929") == "ok"


async def test_openai_wire_request(make_client: MakeClient, openai_server: FakeOpenAI) -> None:
    openai_server.script("Hello there")
    client = make_client(openai_server.env())
    extra = {"seed": 7, "top_p": 0.5, "extra_body": {"top_k": 20}}
    assert await ask(client, LOCAL, temperature=0.7, max_tokens=50, extra_kwargs=extra) == "Hello there"

    (request,) = openai_server.received
    assert request.body == {
        "model": LOCAL,
        "messages": [{"role": "user", "content": "Say hi"}],
        "temperature": 0.7,
        "max_tokens": 50,
        "seed": 7,
        "top_p": 0.5,
        "top_k": 20,
    }
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}"


async def test_openai_leaves_out_unset_params(make_client: MakeClient, openai_server: FakeOpenAI) -> None:
    await ask(make_client(openai_server.env()), LOCAL)
    assert set(openai_server.received[0].body) == {"model", "messages"}


async def test_base_url_without_key_uses_a_placeholder(make_client: MakeClient, openai_server: FakeOpenAI) -> None:
    openai_server.api_key = None
    client = make_client({"OPENAI_BASE_URL": f"{openai_server.url}/v1"})
    assert await ask(client, LOCAL) == "ok"
    assert openai_server.received[0].headers["authorization"].startswith("Bearer ")


@pytest.mark.parametrize(("model", "variable"), [(CLAUDE, "ANTHROPIC_API_KEY"), (LOCAL, "OPENAI_API_KEY")])
async def test_no_credentials(make_client: MakeClient, model: str, variable: str) -> None:
    with pytest.raises(LLMError, match=variable):
        await ask(make_client({}), model)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["top_k", 3], "must be an object"),
        ({"model": "other"}, "may not set 'model'"),
        ({"messages": []}, "may not set 'messages'"),
        ({"stream": True}, "may not set 'stream'"),
        ({"temperature": 0}, "use the temperature field"),
        ({"top_k": 3}, "'top_k' not accepted by the .* SDK; put server-specific parameters under 'extra_body'"),
    ],
    ids=["not-a-dict", "model", "messages", "stream", "temperature", "unknown"],
)
async def test_bad_extra_kwargs_are_refused_before_sending(
    make_client: MakeClient, server: FakeProvider, extra: object, message: str
) -> None:
    with pytest.raises(LLMError, match=message):
        await ask(make_client(server.env()), model_for(server), extra_kwargs=extra)
    assert server.received == []


# --- retries -------------------------------------------------------------------------------


async def test_429_is_retried_after_retry_after(
    make_client: MakeClient, server: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(Fail(429, retry_after=0.05), Fail(429, retry_after=0.05), "finally")
    with caplog.at_level(logging.INFO):
        assert await ask(make_client({**server.env(), **FAST}), model_for(server)) == "finally"
    # stimserver's limiter retries (the SDKs are built with max_retries=0), and logs each wait
    # it chose: the server's retry-after, not its own backoff.
    assert len(server.received) == 3
    assert all(r.headers["x-stainless-retry-count"] == "0" for r in server.received)
    waits = [RETRY_LOG.match(record.getMessage()) for record in caplog.records]
    assert [float(match[1]) for match in waits if match] == [0.05, 0.05]


@pytest.mark.parametrize(
    ("server", "status"),
    [("anthropic", 500), ("anthropic", 529), ("openai", 500), ("openai", 503)],
    indirect=["server"],
)
async def test_5xx_is_retried_then_succeeds(make_client: MakeClient, server: FakeProvider, status: int) -> None:
    server.script(Fail(status, retry_after=0.01), "recovered")
    assert await ask(make_client({**server.env(), **FAST}), model_for(server)) == "recovered"
    assert len(server.received) == 2


@pytest.mark.parametrize(
    ("server", "status", "message"),
    [
        ("anthropic", 429, "rate limited by the LLM provider (429) after 2 retries"),
        ("openai", 429, "rate limited by the LLM provider (429) after 2 retries"),
        ("anthropic", 529, "LLM provider overloaded (529) after 2 retries"),
        ("openai", 503, "LLM provider error (503) after 2 retries: busy"),
    ],
    ids=["anthropic-429", "openai-429", "anthropic-529", "openai-503"],
    indirect=["server"],
)
async def test_gives_up_after_max_retries(
    make_client: MakeClient, server: FakeProvider, status: int, message: str
) -> None:
    server.script(*[Fail(status, "busy", retry_after=0.01)] * 3, "too late")
    with pytest.raises(LLMError) as caught:
        await ask(make_client({**server.env(), **FAST}), model_for(server))
    assert str(caught.value) == message
    assert len(server.received) == 3


# --- errors --------------------------------------------------------------------------------


async def test_wrong_key_is_not_retried(make_client: MakeClient, server: FakeProvider) -> None:
    prefix = "ANTHROPIC" if isinstance(server, FakeAnthropic) else "OPENAI"
    client = make_client({**server.env(), **FAST, f"{prefix}_API_KEY": "sk-wrong-987654321"})
    with pytest.raises(LLMError) as caught:
        await ask(client, model_for(server))
    assert str(caught.value) == f"LLM provider rejected the API key (401); check {prefix}_API_KEY"
    assert len(server.received) == 1


async def test_unknown_model(make_client: MakeClient, server: FakeProvider) -> None:
    server.models = {"some-other-model"}
    with pytest.raises(LLMError, match=r"^model '.+' not found \(404\) at http://127\.0\.0\.1:\d+"):
        await ask(make_client({**server.env(), **FAST}), model_for(server))
    assert len(server.received) == 1


async def test_timeout(make_client: MakeClient, server: FakeProvider) -> None:
    server.script(Slow(30), Slow(30))
    client = make_client({**server.env(), "STIMSERVER_LLM_TIMEOUT": "0.2", "STIMSERVER_LLM_MAX_RETRIES": "1"})
    with pytest.raises(LLMError, match=r"^LLM request to .+ timed out after 0\.2 s \(2 attempts\)$"):
        await ask(client, model_for(server))
    assert len(server.received) == 2


@pytest.mark.parametrize(
    ("variable", "path"),
    [("ANTHROPIC_BASE_URL", ""), ("OPENAI_BASE_URL", "/v1")],
    ids=["anthropic", "openai"],
)
async def test_unreachable(make_client: MakeClient, variable: str, path: str) -> None:
    url = f"http://127.0.0.1:{unused_port()}{path}"
    client = make_client({variable: url, "STIMSERVER_LLM_MAX_RETRIES": "0"})
    model = CLAUDE if variable.startswith("ANTHROPIC") else LOCAL
    with pytest.raises(LLMError) as caught:
        await ask(client, model)
    assert str(caught.value) == f"LLM provider unreachable at {url}: connection refused"


async def test_provider_messages_are_shown_without_the_key(make_client: MakeClient, server: FakeProvider) -> None:
    server.script(Fail(400, f"invalid request from key {TEST_KEY}"))
    with pytest.raises(LLMError) as caught:
        await ask(make_client({**server.env(), **FAST}), model_for(server))
    assert str(caught.value) == "LLM provider rejected the request (400): invalid request from key ***"


async def test_provider_rejection_detail_is_passed_on(make_client: MakeClient, anthropic_server: FakeAnthropic) -> None:
    # Sampling parameters smuggled past the SDK hit the current API version's validation.
    with pytest.raises(LLMError, match=r"\(400\): top_k: Extra inputs are not permitted$"):
        await ask(make_client(anthropic_server.env()), CLAUDE, extra_kwargs={"extra_body": {"top_k": 5}})


@pytest.mark.parametrize(
    ("server", "reply", "message"),
    [
        ("anthropic", Reply(""), "returned an empty completion"),
        ("anthropic", Reply("  \n"), "returned an empty completion"),
        ("anthropic", Reply("", stop="refusal"), "refused the request"),
        ("openai", Reply(""), "returned an empty completion"),
        ("openai", Reply("", stop="length"), r"empty completion \(stop reason: length\)"),
        ("openai", Reply("", refusal="I can't help with that."), "refused the request: I can't help"),
        ("openai", Reply("partial", stop="content_filter"), "refused the request"),
    ],
    ids=["a-empty", "a-blank", "a-refusal", "o-empty", "o-length", "o-refusal", "o-filtered"],
    indirect=["server"],
)
async def test_empty_or_refused_completion(
    make_client: MakeClient, server: FakeProvider, reply: Reply, message: str
) -> None:
    server.script(reply)
    with pytest.raises(LLMError, match=message):
        await ask(make_client(server.env()), model_for(server))


@pytest.mark.parametrize(
    "raw",
    [Raw("<html><body>It works!</body></html>"), Raw('{"status": "ok"}', "application/json")],
    ids=["html-page", "other-json"],
)
async def test_a_reply_that_is_not_a_completion(make_client: MakeClient, server: FakeProvider, raw: Raw) -> None:
    server.script(raw)
    with pytest.raises(LLMError, match=r"^LLM provider at http://127\.0\.0\.1:\d+(/v1)? sent a reply that is not a"):
        await ask(make_client(server.env()), model_for(server))


async def test_credentials_in_the_base_url_never_reach_the_error(make_client: MakeClient) -> None:
    port = unused_port()
    client = make_client({"OPENAI_BASE_URL": f"http://bob:hunter2@127.0.0.1:{port}/v1?api-key=s3cret",
                          "STIMSERVER_LLM_MAX_RETRIES": "0"})
    with pytest.raises(LLMError) as caught:
        await ask(client, LOCAL)
    assert str(caught.value) == f"LLM provider unreachable at http://127.0.0.1:{port}/v1: connection refused"
