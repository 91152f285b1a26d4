"""Local stand-ins for the Anthropic Messages and OpenAI chat-completions HTTP APIs.

They speak the real wire formats (paths, auth headers, success and error bodies), so the
official SDKs run unmodified against them, retries included. Each test scripts the answers
(text, `Reply`, `Fail`, `Slow`, `Raw`, or a callable of the request body) and reads back what
arrived in `received`. With the script empty they answer `default` ("ok", or a callable).

For load-like tests: `latency` delays every answer, `fail_every = (n, Fail(429, ...))` answers
every n-th request with that failure, and `arrivals`, `in_flight`/`max_in_flight` record when
requests came and how many were open at once. Success bodies carry `usage` token counts
(words of the prompt and of the answer), like the real APIs; a `Reply` may say part of the
prompt was read from or written to the prompt cache, reported in each API's own convention.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from aiohttp import web

TEST_KEY = "sk-test-0123456789abcdef"


@dataclass(frozen=True)
class Reply:
    """A successful completion; `stop` is the provider's stop/finish reason. `tool_calls` are
    (name, arguments) pairs the model "calls", in each provider's own shape.

    `cache_read` / `cache_write` prompt tokens (of the prompt's word count) were read from /
    written to the cache: Anthropic reports them as `cache_read_input_tokens` /
    `cache_creation_input_tokens` and leaves them out of `input_tokens`; OpenAI counts them in
    `prompt_tokens` and reports the read ones as `prompt_tokens_details.cached_tokens`."""

    text: str = ""
    stop: str | None = None
    refusal: str | None = None
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    cache_read: int = 0
    cache_write: int = 0


@dataclass(frozen=True)
class Fail:
    """An HTTP error in the provider's error shape, optionally with a `retry-after` header."""

    status: int
    message: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Slow:
    """Answer `text` after `seconds` (or at shutdown), to trip a client timeout."""

    seconds: float
    text: str = "late"


@dataclass(frozen=True)
class Raw:
    """Any body at all, for servers that answer with something other than the API."""

    body: str
    content_type: str = "text/html"


@dataclass(frozen=True)
class Received:
    """One request as it arrived: lower-cased headers and the JSON body."""

    headers: Mapping[str, str]
    body: dict[str, Any]


Answer = str | Reply | Fail | Slow | Raw
Script = Answer | Callable[[dict[str, Any]], Answer]


class FakeProvider(ABC):
    """Shared server plumbing; subclasses define the path, auth rules and body shapes."""

    path: ClassVar[str]
    _ids = itertools.count(1)

    def __init__(self, api_key: str | None = TEST_KEY) -> None:
        self.api_key = api_key  # None accepts any key, like a local server
        self.models: set[str] | None = None  # None accepts any model
        self.received: list[Received] = []
        self.url = ""
        self._script: deque[Script] = deque()
        self.default: Script = "ok"
        self.latency = 0.0
        self.fail_every: tuple[int, Fail] | None = None
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def script(self, *answers: Script) -> None:
        """Queue answers, consumed one per request."""
        self._script.extend(answers)

    async def start(self, host: str = "127.0.0.1") -> None:
        """Listen on a free port of ``host`` (another address for clients in other network namespaces)."""
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.json()
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.received.append(Received(headers, body))
        self.arrivals.append(asyncio.get_running_loop().time())
        if self.fail_every is not None and len(self.received) % self.fail_every[0] == 0:
            return self._error(self.fail_every[1])
        rejected = self._reject(headers, body)
        if rejected is not None:
            return self._error(rejected)
        if self.models is not None and body.get("model") not in self.models:
            return self._error(Fail(404, self._unknown_model_message(body.get("model"))))
        answer = self._script.popleft() if self._script else self.default
        if callable(answer):
            answer = answer(body)
        if self.latency:
            try:
                await asyncio.wait_for(self._closing.wait(), self.latency)
            except TimeoutError:
                pass
        if isinstance(answer, Slow):
            try:
                await asyncio.wait_for(self._closing.wait(), answer.seconds)
            except TimeoutError:
                pass
            answer = answer.text
        if isinstance(answer, Fail):
            return self._error(answer)
        if isinstance(answer, Raw):
            return web.Response(text=answer.body, content_type=answer.content_type)
        reply = Reply(answer) if isinstance(answer, str) else answer
        return web.json_response(self._success(body, reply, next(self._ids)))

    def _error(self, fail: Fail) -> web.Response:
        headers = {} if fail.retry_after is None else {"retry-after": str(fail.retry_after)}
        return web.json_response(self._error_body(fail), status=fail.status, headers=headers)

    @abstractmethod
    def env(self) -> dict[str, str]:
        """The environment variables that point stimserver's LLMConfig at this server."""

    @abstractmethod
    def _reject(self, headers: Mapping[str, str], body: dict[str, Any]) -> Fail | None:
        """The error a real server would give this request before looking at the model, if any."""

    @abstractmethod
    def _unknown_model_message(self, model: object) -> str: ...

    @abstractmethod
    def _success(self, body: dict[str, Any], reply: Reply, serial: int) -> dict[str, Any]: ...

    @abstractmethod
    def _error_body(self, fail: Fail) -> dict[str, Any]: ...


class FakeAnthropic(FakeProvider):
    """`POST /v1/messages`. Like the real API it takes the key as `x-api-key` or a Bearer token,
    requires `anthropic-version`, and rejects sampling parameters on versions after 2023-06-01."""

    path = "/v1/messages"
    _ERROR_TYPES: ClassVar[dict[int, str]] = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }

    def env(self) -> dict[str, str]:
        return {"ANTHROPIC_API_KEY": self.api_key or "", "ANTHROPIC_BASE_URL": self.url}

    def _reject(self, headers: Mapping[str, str], body: dict[str, Any]) -> Fail | None:
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and self.api_key not in (headers.get("x-api-key"), bearer):
            return Fail(401, "invalid x-api-key")
        version = headers.get("anthropic-version")
        if version is None:
            return Fail(400, "anthropic-version: header is required")
        for name in ("temperature", "top_p", "top_k"):
            if name in body and version != "2023-06-01":
                return Fail(400, f"{name}: Extra inputs are not permitted")
        if not isinstance(body.get("max_tokens"), int):
            return Fail(400, "max_tokens: Field required")
        controls = _cache_controls(body)
        if len(controls) > 4:
            return Fail(400, f"A maximum of 4 blocks with cache_control may be provided. Found {len(controls)}.")
        for control in controls:
            if control.get("type") != "ephemeral" or control.get("ttl", "5m") not in ("5m", "1h"):
                return Fail(400, f"cache_control: invalid {control!r}")
        return None

    def _unknown_model_message(self, model: object) -> str:
        return f"model: {model}"

    def _success(self, body: dict[str, Any], reply: Reply, serial: int) -> dict[str, Any]:
        return {
            "id": f"msg_{serial:08d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": ([{"type": "text", "text": reply.text}] if reply.text else [])
            + [{"type": "tool_use", "id": f"toolu_{serial:08d}_{i}", "name": name, "input": args}
               for i, (name, args) in enumerate(reply.tool_calls)],
            "stop_reason": reply.stop or ("tool_use" if reply.tool_calls else "end_turn"),
            "stop_sequence": None,
            "usage": {"input_tokens": max(0, _words(body) - reply.cache_read - reply.cache_write),
                      "output_tokens": len(reply.text.split()),
                      "cache_read_input_tokens": reply.cache_read, "cache_creation_input_tokens": reply.cache_write},
        }

    def _error_body(self, fail: Fail) -> dict[str, Any]:
        kind = self._ERROR_TYPES.get(fail.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": fail.message or kind}}


class FakeOpenAI(FakeProvider):
    """`POST /v1/chat/completions` with Bearer auth, as OpenAI and compatible servers serve it.
    A wrong key's error echoes the key in full, so tests can check it never reaches the user."""

    path = "/v1/chat/completions"
    _ERRORS: ClassVar[dict[int, tuple[str, str | None]]] = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }

    def env(self) -> dict[str, str]:
        return {"OPENAI_API_KEY": self.api_key or "", "OPENAI_BASE_URL": f"{self.url}/v1"}

    def _reject(self, headers: Mapping[str, str], body: dict[str, Any]) -> Fail | None:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Fail(401, "You didn't provide an API key.")
        if self.api_key is not None and auth.removeprefix("Bearer ") != self.api_key:
            return Fail(401, f"Incorrect API key provided: {auth.removeprefix('Bearer ')}.")
        return None

    def _unknown_model_message(self, model: object) -> str:
        return f"The model `{model}` does not exist or you do not have access to it."

    def _success(self, body: dict[str, Any], reply: Reply, serial: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": reply.refusal}
        if reply.tool_calls:
            message["tool_calls"] = [{"id": f"call_{serial}_{i}", "type": "function",
                                      "function": {"name": name, "arguments": json.dumps(args)}}
                                     for i, (name, args) in enumerate(reply.tool_calls)]
        return {
            "id": f"chatcmpl-{serial}",
            "object": "chat.completion",
            "created": 1_700_000_000 + serial,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.stop or ("tool_calls" if reply.tool_calls else "stop"),
                }
            ],
            "usage": {"prompt_tokens": _words(body), "completion_tokens": len(reply.text.split()),
                      "total_tokens": _words(body) + len(reply.text.split()),
                      **({"prompt_tokens_details": {"cached_tokens": reply.cache_read}} if reply.cache_read else {})},
        }

    def _error_body(self, fail: Fail) -> dict[str, Any]:
        kind, code = self._ERRORS.get(fail.status, ("server_error", None))
        return {"error": {"message": fail.message or kind, "type": kind, "param": None, "code": code}}


def _words(body: dict[str, Any]) -> int:
    """A stand-in token count of a request: the words of its messages (and Anthropic's system)."""
    return len(_text(body.get("system")).split()) + sum(
        len(_text(m.get("content")).split()) for m in body.get("messages", []) if isinstance(m, dict))


def _cache_controls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every `cache_control` of a Messages API request: on tools, system blocks and message blocks."""
    blocks: list[Any] = [*(body.get("tools") or [])]
    if isinstance(body.get("system"), list):
        blocks += body["system"]
    for message in body.get("messages", []):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            blocks += message["content"]
    return [b["cache_control"] for b in blocks if isinstance(b, dict) and isinstance(b.get("cache_control"), dict)]


def _text(content: Any) -> str:
    if isinstance(content, list):  # content blocks / parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


@pytest.fixture
async def anthropic_server() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def openai_server() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.close()


class ProviderThread:
    """A fake provider on its own event loop in a background thread: for synchronous tests (the
    official aibread client) and for servers in other processes. ``server`` is the provider;
    script it from the test (its callables run in the provider's thread)."""

    def __init__(self, server: FakeProvider) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-provider", daemon=True)

    def start(self) -> FakeProvider:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(30)
        return self.server

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture
def openai_thread() -> Iterator[FakeOpenAI]:
    """A FakeOpenAI served from a background thread (any key accepted, like a local server)."""
    runner = ProviderThread(FakeOpenAI(api_key=None))
    yield runner.start()
    runner.stop()
