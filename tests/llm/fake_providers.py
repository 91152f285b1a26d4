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
With `auto_cache = True` the fakes work that out themselves, the way each provider caches
(see `FakeAnthropic._cache_tokens`, `FakeOpenAI._cached_tokens`), on the clock `clock`.

Beyond the one endpoint: Anthropic's `POST /v1/messages/count_tokens` and both providers' batch
APIs (Anthropic Message Batches; OpenAI Files + Batch), paced by `clock` as fake_batches.py
explains, their requests answered by the same script, default and cache as the synchronous
endpoint and recorded in `batch_received`. Every HTTP call is logged in `calls`; `fail_call`
makes chosen calls fail. `restart()` stops and starts the HTTP server on the same port with
every batch, file and cache entry intact (they live on this object), as a provider outage would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import re
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, ClassVar, Generic, Literal, TypeVar

import pytest
from aiohttp import web

from .fake_batches import BatchItem, BatchJob, BatchPace, ManualClock, Outcome, page

__all__ = [
    "TEST_KEY", "Answer", "BatchItem", "BatchJob", "Fail", "FakeAnthropic", "FakeOpenAI", "FakeProvider",
    "ManualClock", "Outcome", "PromptCache", "ProviderThread", "Raw", "Received", "Reply", "Script", "Slow",
    "StoredFile", "anthropic_server", "anthropic_thread", "openai_server", "openai_thread",
]

TEST_KEY = "sk-test-0123456789abcdef"
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


@dataclass(frozen=True)
class Reply:
    """A successful completion; `stop` is the provider's stop/finish reason. `tool_calls` are
    (name, arguments) pairs the model "calls", in each provider's own shape.

    `cache_read` / `cache_write` prompt tokens (of the prompt's word count) were read from /
    written to the cache: Anthropic reports them as `cache_read_input_tokens` /
    `cache_creation_input_tokens` and leaves them out of `input_tokens`; OpenAI counts them in
    `prompt_tokens` and reports the read ones as `prompt_tokens_details.cached_tokens`. Either
    set overrides `auto_cache` for this answer."""

    text: str = ""
    stop: str | None = None
    refusal: str | None = None
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    cache_read: int = 0
    cache_write: int = 0


@dataclass(frozen=True)
class Fail:
    """An HTTP error in the provider's error shape, optionally with a `retry-after` header.
    In a batch it is that request's result: an errored result (Anthropic) or a response line with
    this status and error body (OpenAI)."""

    status: int
    message: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Slow:
    """Answer `text` after `seconds` (or at shutdown), to trip a client timeout. In a batch it is
    simply `text`: a batch has no client waiting on one request."""

    seconds: float
    text: str = "late"


@dataclass(frozen=True)
class Raw:
    """Any body at all, for servers that answer with something other than the API. In a batch
    the request gets a 500 in the API's error shape instead (a batch file holds JSON only)."""

    body: str
    content_type: str = "text/html"


@dataclass(frozen=True)
class Received:
    """One request as it arrived: lower-cased headers and the JSON body. For a batched request,
    the headers of the call that created the batch and the request's own body."""

    headers: Mapping[str, str]
    body: dict[str, Any]


@dataclass(frozen=True)
class StoredFile:
    """A file of FakeOpenAI's Files API: an uploaded batch input or a batch's output/error file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.content), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": None,
                "status_details": None}


Answer = str | Reply | Fail | Slow | Raw
Script = Answer | Callable[[dict[str, Any]], Answer]
P = TypeVar("P", bound="FakeProvider")
T = TypeVar("T")


class PromptCache:
    """The prompt prefixes a fake provider has cached: a digest of (model, prefix) and until when
    (on the provider's clock) it can be read. A read refreshes the entry, as the real caches do."""

    def __init__(self) -> None:
        self.entries: dict[bytes, float] = {}

    def fresh(self, key: bytes, now: float) -> bool:
        return self.entries.get(key, float("-inf")) > now

    def put(self, key: bytes, until: float) -> None:
        self.entries[key] = max(until, self.entries.get(key, until))

    def clear(self) -> None:
        self.entries.clear()


class FakeProvider(BatchPace, ABC):
    """Shared server plumbing; subclasses define the path, auth rules and body shapes."""

    path: ClassVar[str]
    _ids = itertools.count(1)

    def __init__(self, api_key: str | None = TEST_KEY) -> None:
        super().__init__()
        self.api_key = api_key  # None accepts any key, like a local server
        self.models: set[str] | None = None  # None accepts any model
        self.received: list[Received] = []
        self.batch_received: list[Received] = []  # batched requests, as each is answered
        self.calls: list[str] = []  # every HTTP call, "METHOD /path"
        self.url = ""
        self.host = "127.0.0.1"
        self.port = 0
        self._script: deque[Script] = deque()
        self.default: Script = "ok"
        self.latency = 0.0
        self.fail_every: tuple[int, Fail] | None = None
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.auto_cache = False  # off: the prompt cache is what each Reply says (nothing by default)
        self.min_cache_tokens = 1024  # shorter prefixes are never cached, as with both real APIs
        self.prompt_cache = PromptCache()
        self._call_faults: list[tuple[str, Fail]] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def script(self, *answers: Script) -> None:
        """Queue answers, consumed one per request (synchronous or batched, in the order answered)."""
        self._script.extend(answers)

    def fail_call(self, pattern: str, *fails: Fail) -> None:
        """Answer the next calls matching ``pattern`` ("METHOD /path", shell wildcards: e.g.
        ``"GET /v1/batches/*"``) with these failures, one call each, before looking at them."""
        self._call_faults.extend((pattern, fail) for fail in fails)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``port`` (0: a free one) of ``host`` (another address for clients in other
        network namespaces)."""
        if self._closing.is_set():  # started again after close(): Slow answers wait again
            self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._middleware()], client_max_size=256 * 1024 * 1024)
        app.add_routes(self._routes())
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.host, self.port = host, self._runner.addresses[0][1]
        self.url = f"http://{host}:{self.port}"

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self) -> None:
        """Stop serving and serve again at the same address: what was in flight is cut off, the
        batches, files and cache go on (their pace clock never stopped)."""
        await self.close()
        await self.start(self.host, self.port)

    def _routes(self) -> list[web.RouteDef]:
        return [web.post(self.path, self._handle)]

    def _middleware(self) -> Callable[..., Any]:
        @web.middleware
        async def log_and_fail(request: web.Request,
                               handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            call = f"{request.method} {request.path}"
            self.calls.append(call)
            for i, (pattern, fail) in enumerate(self._call_faults):
                if fnmatchcase(call, pattern):
                    del self._call_faults[i]
                    return self._error(fail)
            return await handler(request)

        return log_and_fail

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.json()
        headers = _headers(request)
        self.received.append(Received(headers, body))
        self.arrivals.append(asyncio.get_running_loop().time())
        if self.fail_every is not None and len(self.received) % self.fail_every[0] == 0:
            return self._error(self.fail_every[1])
        rejected = self._reject(headers, body)
        if rejected is not None:
            return self._error(rejected)
        if self.models is not None and body.get("model") not in self.models:
            return self._error(Fail(404, self._unknown_model_message(body.get("model"))))
        answer = self._next_answer(body)
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

    def _next_answer(self, body: dict[str, Any]) -> Answer:
        answer = self._script.popleft() if self._script else self.default
        return answer(body) if callable(answer) else answer

    def _error(self, fail: Fail) -> web.Response:
        headers = {} if fail.retry_after is None else {"retry-after": str(fail.retry_after)}
        return web.json_response(self._error_body(fail), status=fail.status, headers=headers)

    # -- batches: one request answered as the synchronous endpoint would have

    def _answer_item(self, job: BatchJob, item: BatchItem, at: float) -> Outcome:
        self.batch_received.append(Received(job.headers, item.body))
        fail = self._item_reject(job, item.body)
        if fail is None and self.models is not None and item.body.get("model") not in self.models:
            fail = Fail(404, self._unknown_model_message(item.body.get("model")))
        answer = fail if fail is not None else self._next_answer(item.body)
        if isinstance(answer, Slow):
            answer = answer.text
        if isinstance(answer, Raw):
            answer = Fail(500, "The server had an error while processing your request.")
        if isinstance(answer, Fail):
            return Outcome(answer.status, self._error_body(answer))
        reply = Reply(answer) if isinstance(answer, str) else answer
        return Outcome(200, self._success(item.body, reply, next(self._ids), at))

    def _item_reject(self, job: BatchJob, body: dict[str, Any]) -> Fail | None:
        """The error the synchronous endpoint would give this batched request's body, if any."""
        return None

    def _job(self, request: web.Request) -> BatchJob | None:
        self.advance_batches()
        return self.batches.get(request.match_info["id"])

    @abstractmethod
    def env(self) -> dict[str, str]:
        """The environment variables that point stimserver's LLMConfig at this server."""

    @abstractmethod
    def _reject(self, headers: Mapping[str, str], body: dict[str, Any]) -> Fail | None:
        """The error a real server would give this request before looking at the model, if any."""

    @abstractmethod
    def _api_reject(self, headers: Mapping[str, str]) -> Fail | None:
        """The error a real server would give any call with these headers (auth, version), if any."""

    @abstractmethod
    def _unknown_model_message(self, model: object) -> str: ...

    @abstractmethod
    def _success(self, body: dict[str, Any], reply: Reply, serial: int, at: float | None = None) -> dict[str, Any]:
        """The success body; `at` is when it is answered on `clock` (now if None), for the cache."""

    @abstractmethod
    def _error_body(self, fail: Fail) -> dict[str, Any]: ...


class FakeAnthropic(FakeProvider):
    """`POST /v1/messages`. Like the real API it takes the key as `x-api-key` or a Bearer token,
    requires `anthropic-version`, and rejects sampling parameters on versions after 2023-06-01.

    Also `POST /v1/messages/count_tokens` and the Message Batches API (`/v1/messages/batches`:
    create, retrieve, list, cancel, delete, results), as the `anthropic` SDK calls them."""

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
    _CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")

    def env(self) -> dict[str, str]:
        return {"ANTHROPIC_API_KEY": self.api_key or "", "ANTHROPIC_BASE_URL": self.url}

    def _routes(self) -> list[web.RouteDef]:
        return [
            *super()._routes(),
            web.post("/v1/messages/count_tokens", self._http_count_tokens),
            web.post("/v1/messages/batches", self._http_create_batch),
            web.get("/v1/messages/batches", self._http_list_batches),
            web.get("/v1/messages/batches/{id}", self._http_retrieve_batch),
            web.delete("/v1/messages/batches/{id}", self._http_delete_batch),
            web.post("/v1/messages/batches/{id}/cancel", self._http_cancel_batch),
            web.get("/v1/messages/batches/{id}/results", self._http_batch_results),
        ]

    def _api_reject(self, headers: Mapping[str, str]) -> Fail | None:
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and self.api_key not in (headers.get("x-api-key"), bearer):
            return Fail(401, "invalid x-api-key")
        if headers.get("anthropic-version") is None:
            return Fail(400, "anthropic-version: header is required")
        return None

    def _reject(self, headers: Mapping[str, str], body: dict[str, Any]) -> Fail | None:
        return self._api_reject(headers) or self._params_reject(body, headers.get("anthropic-version"))

    def _params_reject(self, body: dict[str, Any], version: str | None) -> Fail | None:
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
        ttls = [control.get("ttl", "5m") for control in controls]
        if "5m" in ttls and "1h" in ttls[ttls.index("5m"):]:
            return Fail(400, "cache_control: a ttl='1h' cache_control block must not come after a ttl='5m' one")
        return None

    def _item_reject(self, job: BatchJob, body: dict[str, Any]) -> Fail | None:
        # A batch validates each request's params only when it gets to it, and errors that request alone.
        if not isinstance(body.get("model"), str):
            return Fail(400, "model: Field required")
        if not isinstance(body.get("messages"), list):
            return Fail(400, "messages: Field required")
        if body.get("stream"):
            return Fail(400, "stream: streaming is not supported in a Message Batch")
        return self._params_reject(body, job.headers.get("anthropic-version"))

    def _unknown_model_message(self, model: object) -> str:
        return f"model: {model}"

    def _success(self, body: dict[str, Any], reply: Reply, serial: int, at: float | None = None) -> dict[str, Any]:
        usage: dict[str, Any]
        if reply.cache_read or reply.cache_write or not self.auto_cache:
            read, write, split = reply.cache_read, reply.cache_write, None
        else:
            read, write_5m, write_1h = self._cache_tokens(body, self.clock() if at is None else at)
            write, split = write_5m + write_1h, {"ephemeral_5m_input_tokens": write_5m,
                                                 "ephemeral_1h_input_tokens": write_1h}
        usage = {"input_tokens": max(0, _words(body) - read - write), "output_tokens": len(reply.text.split()),
                 "cache_read_input_tokens": read, "cache_creation_input_tokens": write}
        if split is not None:
            usage["cache_creation"] = split
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
            "usage": usage,
        }

    def _cache_tokens(self, body: dict[str, Any], now: float) -> tuple[int, int, int]:
        """(read, written with a 5m ttl, written with a 1h ttl) prompt tokens, as the Messages API
        caches: the prompt is tools, then system, then messages, block by block; each block with a
        `cache_control` ends a prefix that is written to the cache (if it has `min_cache_tokens`)
        for its ttl. The longest prefix written before for the same model, byte for byte, and still
        alive is read, looked up at the request's breakpoints and at up to 20 block boundaries
        before each, as the real API does; the breakpoints after it are written."""
        digest = hashlib.sha256(_canonical(body.get("model"))).digest()
        boundaries: list[tuple[bytes, int]] = []  # the prefix's key and words after each block
        points: list[tuple[int, str]] = []  # (block index, ttl) of each breakpoint long enough to cache
        words = 0
        for index, (block, count, control) in enumerate(_prompt_blocks(body)):
            digest = hashlib.sha256(digest + _canonical(block)).digest()
            words += count
            boundaries.append((digest, words))
            if control is not None and words >= self.min_cache_tokens:
                points.append((index, control.get("ttl", "5m")))
        hit = max((i for point, _ in points for i in range(max(0, point - 19), point + 1)
                   if boundaries[i][1] >= self.min_cache_tokens and self.prompt_cache.fresh(boundaries[i][0], now)),
                  default=-1)
        read = boundaries[hit][1] if hit >= 0 else 0
        if hit >= 0:  # a read refreshes the entry for the ttl of the breakpoint it was found from
            ttl = next(ttl for point, ttl in points if point >= hit)
            self.prompt_cache.put(boundaries[hit][0], now + TTL_SECONDS[ttl])
        written = {"5m": 0, "1h": 0}
        before = read
        for point, ttl in points:
            if point > hit:
                key, words = boundaries[point]
                written[ttl] += words - before
                before = words
                self.prompt_cache.put(key, now + TTL_SECONDS[ttl])
        return read, written["5m"], written["1h"]

    def _error_body(self, fail: Fail) -> dict[str, Any]:
        kind = self._ERROR_TYPES.get(fail.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": fail.message or kind}}

    # -- count_tokens

    async def _http_count_tokens(self, request: web.Request) -> web.Response:
        """The prompt's size as the usage of the same request would report it (input, cache read
        and cache write together): the words of system and messages."""
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        body = await _json_body(request)
        if body is None:
            return self._error(Fail(400, "The request body is not valid JSON."))
        for name, kind in (("model", str), ("messages", list)):
            if not isinstance(body.get(name), kind):
                return self._error(Fail(400, f"{name}: Field required"))
        if self.models is not None and body["model"] not in self.models:
            return self._error(Fail(404, self._unknown_model_message(body["model"])))
        return web.json_response({"input_tokens": _words(body)})

    # -- Message Batches

    async def _http_create_batch(self, request: web.Request) -> web.Response:
        headers = _headers(request)
        rejected = self._api_reject(headers)
        if rejected is not None:
            return self._error(rejected)
        body = await _json_body(request)
        requests = None if body is None else body.get("requests")
        if not isinstance(requests, list) or not requests:
            return self._error(Fail(400, "requests: List should have at least 1 item"))
        if len(requests) > 100_000:
            return self._error(Fail(400, "requests: List should have at most 100000 items"))
        items: list[BatchItem] = []
        seen: set[str] = set()
        for i, entry in enumerate(requests):
            custom_id = entry.get("custom_id") if isinstance(entry, dict) else None
            if not isinstance(custom_id, str) or not self._CUSTOM_ID.fullmatch(custom_id):
                return self._error(Fail(400, f"requests.{i}.custom_id: String should match pattern "
                                             f"'^[a-zA-Z0-9_-]{{1,64}}$'"))
            if not isinstance(entry.get("params"), dict):
                return self._error(Fail(400, f"requests.{i}.params: Field required"))
            if custom_id in seen:
                return self._error(Fail(400, f"requests.{i}.custom_id: Duplicate custom_id {custom_id!r}; "
                                             "each request's custom_id must be unique within the batch"))
            seen.add(custom_id)
            items.append(BatchItem(custom_id, entry["params"]))
        job = self._new_batch(f"msgbatch_{next(self._ids):024d}", headers, items, validates=False, finalizes=False)
        return web.json_response(self._batch_json(job, request))

    async def _http_retrieve_batch(self, request: web.Request) -> web.Response:
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        job = self._job(request)
        if job is None:
            return self._error(Fail(404, f"message_batch_id: no Message Batch {request.match_info['id']!r}"))
        return web.json_response(self._batch_json(job, request))

    async def _http_list_batches(self, request: web.Request) -> web.Response:
        """Newest first, `limit` (1-1000, default 20) at a time after `after_id` or before `before_id`."""
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        self.advance_batches()
        limit = _int(request.query.get("limit", "20"))
        if limit is None or not 1 <= limit <= 1000:
            return self._error(Fail(400, "limit: Input should be greater than or equal to 1 and at most 1000"))
        ids, more = page(list(reversed(self.batches)), after=request.query.get("after_id"),
                         before=request.query.get("before_id"), limit=limit)
        return web.json_response({"data": [self._batch_json(self.batches[i], request) for i in ids],
                                  "has_more": more, "first_id": ids[0] if ids else None,
                                  "last_id": ids[-1] if ids else None})

    async def _http_cancel_batch(self, request: web.Request) -> web.Response:
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        job = self._job(request)
        if job is None:
            return self._error(Fail(404, f"message_batch_id: no Message Batch {request.match_info['id']!r}"))
        if not self._cancel_batch(job):
            return self._error(Fail(400, f"Message Batch {job.id} has already ended; it cannot be canceled"))
        return web.json_response(self._batch_json(job, request))

    async def _http_delete_batch(self, request: web.Request) -> web.Response:
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        job = self._job(request)
        if job is None:
            return self._error(Fail(404, f"message_batch_id: no Message Batch {request.match_info['id']!r}"))
        if not job.ended:
            return self._error(Fail(400, f"Message Batch {job.id} is still processing; cancel it first"))
        del self.batches[job.id]
        return web.json_response({"id": job.id, "type": "message_batch_deleted"})

    async def _http_batch_results(self, request: web.Request) -> web.Response:
        """JSONL, one line per request in an order unrelated to the input's: `succeeded` with
        the message, `errored` with the error body, or `canceled` / `expired`."""
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        job = self._job(request)
        if job is None:
            return self._error(Fail(404, f"message_batch_id: no Message Batch {request.match_info['id']!r}"))
        if not job.ended:
            return self._error(Fail(400, f"Message Batch {job.id} has not ended; its results are not ready"))
        lines = []
        for item in job.results():
            result: dict[str, Any]
            if item.outcome is None:
                result = {"type": "canceled" if job.end == "cancelled" else "expired"}
            elif item.outcome.ok:
                result = {"type": "succeeded", "message": item.outcome.body}
            else:
                result = {"type": "errored", "error": item.outcome.body}
            lines.append(json.dumps({"custom_id": item.custom_id, "result": result}) + "\n")
        return web.Response(body="".join(lines).encode(), content_type="application/binary")

    def _answer_item(self, job: BatchJob, item: BatchItem, at: float) -> Outcome:
        outcome = super()._answer_item(job, item, at)
        if outcome.ok:
            outcome.body["usage"]["service_tier"] = "batch"
        return outcome

    def _batch_json(self, job: BatchJob, request: web.Request) -> dict[str, Any]:
        """A MessageBatch. As documented, the counts other than `processing` stay 0 until the whole
        batch has ended; `results_url` is absolute, on the address the client called."""
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if not job.ended:
            counts["processing"] = len(job.items)
        for item in job.items if job.ended else ():
            if item.outcome is not None:
                counts["succeeded" if item.outcome.ok else "errored"] += 1
            else:
                counts["canceled" if job.end == "cancelled" else "expired"] += 1
        cancelling = job.times.get("cancelling")
        return {
            "id": job.id,
            "type": "message_batch",
            "processing_status": "ended" if job.ended else "canceling" if job.phase == "cancelling" else "in_progress",
            "request_counts": counts,
            "created_at": _rfc3339(job.wall(job.created)),
            "expires_at": _rfc3339(job.wall(job.expires)),
            "ended_at": _rfc3339(job.wall(job.times[job.end])) if job.end else None,
            "cancel_initiated_at": None if cancelling is None else _rfc3339(job.wall(cancelling)),
            "archived_at": None,
            "results_url": f"{request.url.origin()}/v1/messages/batches/{job.id}/results" if job.ended else None,
        }


class FakeOpenAI(FakeProvider):
    """`POST /v1/chat/completions` with Bearer auth, as OpenAI and compatible servers serve it.
    A wrong key's error echoes the key in full, so tests can check it never reaches the user.

    Also the Files API (`/v1/files`: upload, retrieve, list, delete, content) and the Batch API
    (`/v1/batches`: create, retrieve, list, cancel) for `/v1/chat/completions` batches, as the
    `openai` SDK calls them. A batched request answered with a non-2xx status goes, with its
    status and error body, to the error file (`error_responses_file = "error"`, what OpenAI does),
    or to the output file with ``"output"``; requests never run (expired, cancelled) always go to
    the error file with an error code."""

    path = "/v1/chat/completions"
    _ERRORS: ClassVar[dict[int, tuple[str, str | None]]] = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }
    _PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
    _NOT_RUN: ClassVar[dict[str, tuple[str, str]]] = {
        "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
        "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
    }

    def __init__(self, api_key: str | None = TEST_KEY) -> None:
        super().__init__(api_key)
        self.cache_ttl_seconds = 600.0  # OpenAI keeps a prefix 5-10 minutes after its last use
        self.files: dict[str, StoredFile] = {}
        self.error_responses_file: Literal["error", "output"] = "error"

    def env(self) -> dict[str, str]:
        return {"OPENAI_API_KEY": self.api_key or "", "OPENAI_BASE_URL": f"{self.url}/v1"}

    def _routes(self) -> list[web.RouteDef]:
        return [
            *super()._routes(),
            web.post("/v1/files", self._http_upload),
            web.get("/v1/files", self._http_list_files),
            web.get("/v1/files/{id}", self._http_retrieve_file),
            web.delete("/v1/files/{id}", self._http_delete_file),
            web.get("/v1/files/{id}/content", self._http_file_content),
            web.post("/v1/batches", self._http_create_batch),
            web.get("/v1/batches", self._http_list_batches),
            web.get("/v1/batches/{id}", self._http_retrieve_batch),
            web.post("/v1/batches/{id}/cancel", self._http_cancel_batch),
        ]

    def _api_reject(self, headers: Mapping[str, str]) -> Fail | None:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Fail(401, "You didn't provide an API key.")
        if self.api_key is not None and auth.removeprefix("Bearer ") != self.api_key:
            return Fail(401, f"Incorrect API key provided: {auth.removeprefix('Bearer ')}.")
        return None

    def _reject(self, headers: Mapping[str, str], body: dict[str, Any]) -> Fail | None:
        return self._api_reject(headers)

    def _unknown_model_message(self, model: object) -> str:
        return f"The model `{model}` does not exist or you do not have access to it."

    def _success(self, body: dict[str, Any], reply: Reply, serial: int, at: float | None = None) -> dict[str, Any]:
        cached = reply.cache_read
        if self.auto_cache and not (reply.cache_read or reply.cache_write):
            cached = self._cached_tokens(body, self.clock() if at is None else at)
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
                      **({"prompt_tokens_details": {"cached_tokens": cached}} if cached else {})},
        }

    def _cached_tokens(self, body: dict[str, Any], now: float) -> int:
        """The prompt tokens OpenAI would serve from its automatic cache: for a prompt of at least
        `min_cache_tokens`, the longest run of whole leading messages (after the tools) that an
        earlier request to the same model sent byte for byte within `cache_ttl_seconds`, if that
        run has `min_cache_tokens` itself. Every prefix of this prompt is cached in turn."""
        if _words(body) < self.min_cache_tokens:
            return 0
        digest = hashlib.sha256(_canonical([body.get("model"), body.get("tools")])).digest()
        cached = words = 0
        for message in body.get("messages") or []:
            digest = hashlib.sha256(digest + _canonical(message)).digest()
            if isinstance(message, dict):
                words += len(_text(message.get("content")).split())
            if words >= self.min_cache_tokens and self.prompt_cache.fresh(digest, now):
                cached = words
            self.prompt_cache.put(digest, now + self.cache_ttl_seconds)
        return cached

    def _error_body(self, fail: Fail) -> dict[str, Any]:
        kind, code = self._ERRORS.get(fail.status, ("server_error", None))
        return {"error": {"message": fail.message or kind, "type": kind, "param": None, "code": code}}

    def _api_error(self, status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}},
                                 status=status)

    # -- Files

    async def _http_upload(self, request: web.Request) -> web.Response:
        """A multipart upload (`file`, `purpose`); a batch input must be named *.jsonl, as OpenAI
        insists. Its lines are only checked when a batch validates it."""
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        if not request.content_type.startswith("multipart/"):
            return self._api_error(400, "The request must be multipart/form-data.")
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField):
            return self._api_error(400, "Missing required parameter: 'file'.", "file")
        if not isinstance(purpose, str) or purpose not in self._PURPOSES:
            return self._api_error(400, f"{purpose!r} is not one of {list(self._PURPOSES)} - 'purpose'", "purpose")
        if purpose == "batch" and not upload.filename.endswith(".jsonl"):
            return self._api_error(400, "Invalid file format for Batch API. Must be .jsonl", "file")
        stored = self._store_file(upload.filename, purpose, upload.file.read())
        return web.json_response(stored.as_json())

    def _store_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(f"file-{next(self._ids):024d}", filename, purpose, content,
                            int(dt.datetime.now(dt.UTC).timestamp()))
        self.files[stored.id] = stored
        return stored

    async def _http_list_files(self, request: web.Request) -> web.Response:
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        purpose = request.query.get("purpose")
        ids = [f.id for f in reversed(self.files.values()) if purpose is None or f.purpose == purpose]
        limit = _int(request.query.get("limit", "10000"))
        if limit is None or not 1 <= limit <= 10000:
            return self._api_error(400, "Invalid 'limit': must be between 1 and 10000.", "limit")
        ids, more = page(ids, after=request.query.get("after"), limit=limit)
        return web.json_response({"object": "list", "data": [self.files[i].as_json() for i in ids],
                                  "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None,
                                  "has_more": more})

    def _file(self, request: web.Request) -> StoredFile | web.Response:
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        file_id = request.match_info["id"]
        stored = self.files.get(file_id)
        return stored if stored is not None else self._api_error(404, f"No such File object: {file_id}", "id")

    async def _http_retrieve_file(self, request: web.Request) -> web.Response:
        stored = self._file(request)
        return stored if isinstance(stored, web.Response) else web.json_response(stored.as_json())

    async def _http_delete_file(self, request: web.Request) -> web.Response:
        stored = self._file(request)
        if isinstance(stored, web.Response):
            return stored
        del self.files[stored.id]
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    async def _http_file_content(self, request: web.Request) -> web.Response:
        stored = self._file(request)
        if isinstance(stored, web.Response):
            return stored
        return web.Response(body=stored.content, content_type="application/octet-stream")

    # -- Batch

    async def _http_create_batch(self, request: web.Request) -> web.Response:
        """Checks the call itself now; the file's lines are validated by the batch's first step."""
        headers = _headers(request)
        rejected = self._api_reject(headers)
        if rejected is not None:
            return self._error(rejected)
        body = await _json_body(request)
        if body is None:
            return self._api_error(400, "We could not parse the JSON body of your request.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return self._api_error(400, f"Missing required parameter: '{name}'.", name)
        if body["endpoint"] != self.path:
            return self._api_error(400, f"Invalid value for 'endpoint': {body['endpoint']!r} (this fake batches "
                                        f"only {self.path}).", "endpoint")
        if body["completion_window"] != "24h":
            return self._api_error(400, "Invalid value for 'completion_window': only '24h' is supported.",
                                   "completion_window")
        stored = self.files.get(body["input_file_id"])
        if stored is None:
            return self._api_error(404, f"No such File object: {body['input_file_id']}", "input_file_id")
        if stored.purpose != "batch":
            return self._api_error(400, f"File {stored.id} was not uploaded with purpose 'batch'.", "input_file_id")
        metadata = body.get("metadata")
        if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items())):
            return self._api_error(400, "Invalid 'metadata': at most 16 string pairs (keys up to 64 characters, "
                                        "values up to 512).", "metadata")
        job = self._new_batch(f"batch_{next(self._ids):024d}", headers, [], validates=True, finalizes=True,
                              input_file_id=stored.id, endpoint=body["endpoint"], metadata=metadata)
        return web.json_response(self._batch_json(job))

    async def _http_retrieve_batch(self, request: web.Request) -> web.Response:
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        job = self._job(request)
        if job is None:
            return self._api_error(404, f"No batch found with id '{request.match_info['id']}'.")
        return web.json_response(self._batch_json(job))

    async def _http_list_batches(self, request: web.Request) -> web.Response:
        """Newest first, `limit` (1-100, default 20) at a time after the batch `after`."""
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        self.advance_batches()
        limit = _int(request.query.get("limit", "20"))
        if limit is None or not 1 <= limit <= 100:
            return self._api_error(400, "Invalid 'limit': integer below minimum value or above maximum value.",
                                   "limit", "integer_out_of_range")
        ids, more = page(list(reversed(self.batches)), after=request.query.get("after"), limit=limit)
        return web.json_response({"object": "list", "data": [self._batch_json(self.batches[i]) for i in ids],
                                  "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None,
                                  "has_more": more})

    async def _http_cancel_batch(self, request: web.Request) -> web.Response:
        rejected = self._api_reject(_headers(request))
        if rejected is not None:
            return self._error(rejected)
        job = self._job(request)
        if job is None:
            return self._api_error(404, f"No batch found with id '{request.match_info['id']}'.")
        if not self._cancel_batch(job):
            return self._api_error(409, f"Cannot cancel a batch with status '{self._status(job)}'.")
        return web.json_response(self._batch_json(job))

    def _validate_batch(self, job: BatchJob) -> list[dict[str, Any]]:
        """The input file's checks, each failure an `errors.data` entry with its 1-based line."""
        stored = self.files.get(job.info["input_file_id"])
        if stored is None:
            return [_batch_error("file_not_found", f"The input file {job.info['input_file_id']} was deleted.")]
        lines = [(n, line) for n, line in enumerate(stored.content.decode("utf-8", "replace").splitlines(), 1)
                 if line.strip()]
        if not lines:
            return [_batch_error("empty_file", "The batch input file is empty. Please upload a file with at least "
                                               "one request.")]
        if len(lines) > 50_000:
            return [_batch_error("too_many_tasks", "The batch input file contains more than 50,000 requests.")]
        errors: list[dict[str, Any]] = []
        items: list[BatchItem] = []
        seen: set[str] = set()
        model: str | None = None
        for n, line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                errors.append(_batch_error("invalid_json_line", "This line is not parseable as valid JSON.", n))
                continue
            missing = [key for key in ("custom_id", "method", "url", "body") if key not in entry]
            errors += [_batch_error("missing_required_parameter", f"Missing required parameter: '{key}'.", n, key)
                       for key in missing]
            if missing:
                continue
            custom_id, request_body = entry["custom_id"], entry["body"]
            if entry["method"] != "POST":
                errors.append(_batch_error("invalid_method", "The request method must be POST.", n, "method"))
            if entry["url"] != job.info["endpoint"]:
                errors.append(_batch_error("url_mismatch", "The URL provided for this request does not match the "
                                                           "batch endpoint.", n, "url"))
            if not isinstance(request_body, dict) or not isinstance(request_body.get("model"), str):
                errors.append(_batch_error("missing_required_parameter", "Missing required parameter: 'model'.", n,
                                           "body.model"))
            elif model is not None and request_body["model"] != model:
                errors.append(_batch_error("model_mismatch", "The provided model does not match the model of the "
                                                             "other requests in this batch.", n, "body.model"))
            else:
                model = request_body["model"]
            if not isinstance(custom_id, str) or not custom_id:
                errors.append(_batch_error("invalid_custom_id", "The custom_id must be a non-empty string.", n,
                                           "custom_id"))
            elif custom_id in seen:
                errors.append(_batch_error("duplicate_custom_id", "The custom_id for this request is a duplicate of "
                                                                  "another request. The custom_id parameter must be "
                                                                  "unique for each request in a batch.", n,
                                           "custom_id"))
            else:
                seen.add(custom_id)
                items.append(BatchItem(custom_id, request_body))
        if errors:
            return errors
        job.items, job.info["model"] = items, model
        return []

    def _batch_ended(self, job: BatchJob) -> None:
        """Write the output file (2xx responses; non-2xx too with `error_responses_file =
        "output"`) and the error file (the rest), lines in the batch's results order."""
        if job.end == "failed":
            return
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in job.results():
            line_id = f"batch_req_{next(self._ids):024d}"
            if item.outcome is None:
                code, message = self._NOT_RUN[job.end or "expired"]
                errors.append({"id": line_id, "custom_id": item.custom_id, "response": None,
                               "error": {"code": code, "message": message}})
                continue
            line = {"id": line_id, "custom_id": item.custom_id, "error": None,
                    "response": {"status_code": item.outcome.status, "request_id": f"req_{next(self._ids):032d}",
                                 "body": item.outcome.body}}
            (output if item.outcome.ok or self.error_responses_file == "output" else errors).append(line)
        for key, lines, kind in (("output_file_id", output, "output"), ("error_file_id", errors, "error")):
            if lines:
                content = "".join(json.dumps(line) + "\n" for line in lines).encode()
                job.info[key] = self._store_file(f"{job.id}_{kind}.jsonl", "batch_output", content).id

    def _status(self, job: BatchJob) -> str:
        return job.end if job.end is not None else job.phase

    def _batch_json(self, job: BatchJob) -> dict[str, Any]:
        """A Batch: counts move as requests are answered (`failed`: answered with a non-2xx status;
        requests that expired or were cancelled unanswered count in neither); `usage` sums the
        successful answers'."""
        def at(name: str) -> int | None:
            moment = job.times.get(name)
            return None if moment is None else int(job.wall(moment))

        answered = job.answered()
        bodies = [item.outcome.body for item in answered if item.outcome is not None and item.outcome.ok]
        usages = [body.get("usage", {}) for body in bodies]
        prompt = sum(u.get("prompt_tokens", 0) for u in usages)
        completion = sum(u.get("completion_tokens", 0) for u in usages)
        cached = sum(u.get("prompt_tokens_details", {}).get("cached_tokens", 0) for u in usages)
        errors = job.info.get("errors")
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": job.info["endpoint"],
            "model": job.info.get("model"),
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": job.info["input_file_id"],
            "completion_window": "24h",
            "status": self._status(job),
            "output_file_id": job.info.get("output_file_id"),
            "error_file_id": job.info.get("error_file_id"),
            "created_at": at("created"),
            "in_progress_at": at("in_progress"),
            "expires_at": int(job.wall(job.expires)),
            "finalizing_at": at("finalizing"),
            "completed_at": at("completed"),
            "failed_at": at("failed"),
            "expired_at": at("expired"),
            "cancelling_at": at("cancelling"),
            "cancelled_at": at("cancelled"),
            "request_counts": {"total": len(job.items), "completed": len(bodies),
                               "failed": len(answered) - len(bodies)},
            "metadata": job.info.get("metadata"),
            "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
                      "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": prompt + completion},
        }


def _words(body: dict[str, Any]) -> int:
    """A stand-in token count of a request: the words of its messages (and Anthropic's system).
    Tools count nothing (their bytes still make a cached prefix differ)."""
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


def _prompt_blocks(body: dict[str, Any]) -> list[tuple[Any, int, dict[str, Any] | None]]:
    """A Messages API prompt in its caching order (tools, system, messages), block by block: what
    the block is (without its cache_control, a string content as the text block it stands for),
    its words as `_words` counts them, and its cache_control."""
    def blocks(content: Any) -> list[Any]:
        if content is None:
            return []
        return content if isinstance(content, list) else [{"type": "text", "text": str(content)}]

    def entry(where: list[Any], block: Any, words: bool) -> tuple[Any, int, dict[str, Any] | None]:
        if not isinstance(block, dict):
            return [*where, block], 0, None
        control = block.get("cache_control")
        bare = {key: value for key, value in block.items() if key != "cache_control"}
        count = len(str(block.get("text", "")).split()) if words else 0
        return [*where, bare], count, control if isinstance(control, dict) else None

    out = [entry(["tool"], tool, False) for tool in body.get("tools") or []]
    out += [entry(["system"], block, True) for block in blocks(body.get("system"))]
    for i, message in enumerate(body.get("messages", [])):
        if isinstance(message, dict):
            out += [entry(["message", i, message.get("role")], block, True) for block in blocks(message.get("content"))]
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):  # content blocks / parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _headers(request: web.Request) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _rfc3339(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat().replace("+00:00", "Z")


def _batch_error(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


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


class ProviderThread(Generic[P]):
    """A fake provider on its own event loop in a background thread: for synchronous tests (the
    official aibread client) and for servers in other processes. ``server`` is the provider;
    script it from the test (its callables run in the provider's thread). Batch hooks are safe
    to call from the test's thread; `call` runs anything else on the provider's loop."""

    def __init__(self, server: P) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-provider", daemon=True)

    def start(self) -> P:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(30)
        return self.server

    def restart(self) -> None:
        """The provider goes away and comes back at the same address, its batches intact."""
        asyncio.run_coroutine_threadsafe(self.server.restart(), self._loop).result(30)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the provider's loop, its result returned here."""
        async def run() -> T:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

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


@pytest.fixture
def anthropic_thread() -> Iterator[FakeAnthropic]:
    """A FakeAnthropic served from a background thread (any key accepted)."""
    runner = ProviderThread(FakeAnthropic(api_key=None))
    yield runner.start()
    runner.stop()
