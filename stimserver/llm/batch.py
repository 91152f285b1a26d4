"""The providers' batch APIs, in one shape: submit many chat requests, poll, read the results.

Both providers answer a batch within 24 h at half the price of the same requests sent one
by one (the price table's ``batch_discount``):

* OpenAI Batch: the requests go up as a JSONL file (``purpose="batch"``), ``POST /v1/batches``
  starts the batch; ``validating → in_progress → finalizing → completed`` (or ``failed``,
  ``expired``, ``cancelling → cancelled``); answers come back in an output file (every
  request that got an HTTP response, 2xx or not) and an error file (requests that never ran).
* Anthropic Message Batches: ``POST /v1/messages/batches`` with the requests inline;
  ``in_progress → canceling → ended``; results stream as JSONL, each ``succeeded``,
  ``errored``, ``canceled`` or ``expired``.

Results come in any order and are matched by ``custom_id``. Each becomes a ``BatchResult``:
a ``ChatAnswer``, a rejection (this request alone is bad: a 400, a refusal, an empty
answer: final, like a rejection today) or a miss (expired, cancelled, a server error:
worth sending again). The job side (``jobs.batches``) stores the batch ids before it
relies on them, so a restart polls the same batches instead of paying for them twice;
``find`` recovers a batch whose id a crash kept from being stored, by the marker put in
its metadata (OpenAI) or by its creation time and size (Anthropic keeps no metadata).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import orjson

from .chat import (
    ChatAnswer,
    chat_completion_params,
    chat_completion_reply,
    chat_message_params,
    chat_message_reply,
)
from .describe import clip, describe, llm_error, shown_url
from .errors import REJECTED_STATUSES, Answer, LLMError
from .prices import AnswerCost

if TYPE_CHECKING:
    import anthropic
    import openai
else:
    from .sdk import anthropic, openai

__all__ = ["BatchAPI", "BatchItem", "BatchState", "BatchResult", "OPENAI_ENDPOINT"]

OPENAI_ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"
_OPENAI_ENDED = {"completed", "failed", "expired", "cancelled"}
_FIND_SLACK_SECONDS = 300  # clock skew between this host and the provider, when matching by time
T = TypeVar("T")


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch: its ``custom_id`` and the provider-ready request body."""

    custom_id: str
    params: dict[str, Any]


@dataclass(frozen=True)
class BatchState:
    """A batch as the provider reports it; ``done`` counts requests that have finished, any way."""

    id: str
    status: str       # the provider's own word
    ended: bool       # no request will change any more: the results can be read
    total: int
    done: int
    failed: int
    error: str | None = None  # why the whole batch failed (OpenAI's validation), if it did

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "ended": self.ended, "total": self.total, "done": self.done,
                "failed": self.failed, "error": self.error}


@dataclass(frozen=True)
class BatchResult:
    """One request's outcome: ``answer``, or ``error`` (``error.rejected``: final; otherwise a miss)."""

    custom_id: str
    answer: ChatAnswer | None = None
    error: LLMError | None = None


class LLMClient(Protocol):
    """What a batch needs of ``providers.LLMClient`` (which builds ``BatchAPI``: no import back)."""

    @property
    def config(self) -> Any: ...
    def anthropic_sdk(self) -> anthropic.AsyncAnthropic: ...
    def openai_sdk(self) -> openai.AsyncOpenAI: ...
    def redact(self, text: str) -> str: ...
    def batch_cost(self, model: str, answer: Answer) -> AnswerCost: ...


class BatchAPI:
    """The batch endpoints of the provider ``model`` belongs to, through ``client``'s SDK clients."""

    def __init__(self, client: LLMClient, model: str) -> None:
        self._client = client
        self.model = model
        self.provider = client.config.provider_for(model)

    @property
    def client(self) -> LLMClient:
        return self._client

    async def load(self) -> None:
        """Import the provider's SDK off the event loop (the first import takes ~1 s)."""
        from .sdk import preload
        await preload(self.provider)

    # -- requests ----------------------------------------------------------------------

    def item(self, custom_id: str, *, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
             temperature: float | None, max_tokens: int | None, extra_kwargs: dict[str, Any] | None) -> BatchItem:
        """The batch request of one conversation: the body a request sent alone would carry."""
        config = self._client.config
        if self.provider == "anthropic":
            params = chat_message_params(self._client.anthropic_sdk(), self.model, messages, tools, temperature,
                                         max_tokens, extra_kwargs, cache=config.anthropic_cache)
        else:
            from .wire import sampling_kwargs
            extra = sampling_kwargs(config.openai_server, temperature, extra_kwargs)
            params = chat_completion_params(self._client.openai_sdk(), self.model, messages, tools, temperature,
                                            max_tokens, extra)
        return BatchItem(custom_id, _flat(params))

    # -- submit, poll, find ------------------------------------------------------------

    async def submit(self, items: list[BatchItem], marker: str) -> BatchState:
        """Start one batch of ``items``; ``marker`` goes into its metadata where the API keeps any."""
        if self.provider == "anthropic":
            client = self._client.anthropic_sdk()
            requests = [{"custom_id": i.custom_id, "params": i.params} for i in items]
            batch = await self._call(lambda: client.messages.batches.create(
                requests=requests, extra_headers=_anthropic_headers(items)))  # type: ignore[arg-type]
            return _anthropic_state(batch)
        oai = self._client.openai_sdk()
        data = b"".join(orjson.dumps({"custom_id": i.custom_id, "method": "POST", "url": OPENAI_ENDPOINT,
                                      "body": i.params}) + b"\n" for i in items)
        file = await self._call(lambda: oai.files.create(file=("stimserver-batch.jsonl", data, "application/jsonl"),
                                                         purpose="batch"))
        created = await self._call(lambda: oai.batches.create(input_file_id=file.id, endpoint=OPENAI_ENDPOINT,
                                                              completion_window="24h",
                                                              metadata={"stimserver": marker}))
        return _openai_state(created)

    async def poll(self, batch_id: str) -> BatchState:
        if self.provider == "anthropic":
            client = self._client.anthropic_sdk()
            return _anthropic_state(await self._call(lambda: client.messages.batches.retrieve(batch_id)))
        oai = self._client.openai_sdk()
        return _openai_state(await self._call(lambda: oai.batches.retrieve(batch_id)))

    async def cancel(self, batch_id: str) -> None:
        if self.provider == "anthropic":
            client = self._client.anthropic_sdk()
            await self._call(lambda: client.messages.batches.cancel(batch_id))
        else:
            oai = self._client.openai_sdk()
            await self._call(lambda: oai.batches.cancel(batch_id))

    async def find(self, marker: str, size: int, since: float, known: set[str]) -> BatchState | None:
        """The batch a crash left unrecorded: submitted at or after ``since`` (epoch seconds) with ``size``
        requests and, where the API keeps metadata, ``marker``; None when none was created."""
        earliest = since - _FIND_SLACK_SECONDS
        if self.provider == "anthropic":
            client = self._client.anthropic_sdk()
            page = await self._call(lambda: client.messages.batches.list(limit=100))
            found: list[Any] = []
            async for batch in page:
                if batch.created_at.timestamp() < earliest:
                    break
                counts = batch.request_counts
                total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
                if total == size and batch.id not in known:
                    found.append(batch)
            # Anthropic batches carry no metadata: the oldest unclaimed one of the right size since then.
            return _anthropic_state(min(found, key=lambda b: b.created_at)) if found else None
        oai = self._client.openai_sdk()
        listing = await self._call(lambda: oai.batches.list(limit=100))
        async for openai_batch in listing:
            if openai_batch.created_at < earliest:
                break
            if (openai_batch.metadata or {}).get("stimserver") == marker:
                return _openai_state(openai_batch)
        return None

    # -- results -------------------------------------------------------------------------

    async def results(self, batch_id: str) -> AsyncGenerator[BatchResult, None]:
        """Every result of an ended batch, in the provider's order."""
        if self.provider == "anthropic":
            client = self._client.anthropic_sdk()
            stream = await self._call(lambda: client.messages.batches.results(batch_id))
            try:
                async for entry in stream:
                    yield self._anthropic_result(entry)
            finally:  # also when the reader stops early (a shutdown): the connection goes back, or is closed
                await stream.close()
            return
        oai = self._client.openai_sdk()
        batch = await self._call(lambda: oai.batches.retrieve(batch_id))
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._call(lambda fid=file_id: oai.files.content(fid))  # type: ignore[misc]
            for raw in content.content.splitlines():
                if raw.strip():
                    yield self._openai_result(raw)

    def _anthropic_result(self, entry: Any) -> BatchResult:
        custom_id, result = str(entry.custom_id), entry.result
        kind = getattr(result, "type", None)
        if kind == "succeeded":
            try:
                return BatchResult(custom_id, answer=chat_message_reply(result.message, self.model))
            except LLMError as e:
                return BatchResult(custom_id, error=e)
            except (AttributeError, TypeError):
                return BatchResult(custom_id, error=LLMError("the batch result is not a Messages API reply"))
        if kind == "errored":
            inner = getattr(getattr(result, "error", None), "error", None)
            error_type = str(getattr(inner, "type", "api_error"))
            message = clip(str(getattr(inner, "message", error_type)))
            rejected = error_type in ("invalid_request_error", "request_too_large")
            return BatchResult(custom_id, error=LLMError(f"model {self.model!r}: {error_type}: {message}",
                                                         rejected=rejected))
        return BatchResult(custom_id, error=LLMError(f"the batch request was {kind} before it ran", rejected=False))

    def _openai_result(self, raw: bytes) -> BatchResult:
        try:
            line = orjson.loads(raw)
            custom_id = str(line["custom_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return BatchResult("", error=LLMError("a batch result line is not JSON with a custom_id"))
        response, error = line.get("response"), line.get("error")
        if isinstance(response, dict) and isinstance(response.get("body"), dict):
            status, body = response.get("status_code"), response["body"]
            if status == 200:
                try:
                    completion = openai.types.chat.ChatCompletion.model_validate(body)
                    return BatchResult(custom_id, answer=chat_completion_reply(completion, self.model))
                except LLMError as e:
                    return BatchResult(custom_id, error=e)
                except (ValueError, AttributeError, TypeError):
                    return BatchResult(custom_id, error=LLMError("the batch result is not a chat completion"))
            detail = body.get("error") if isinstance(body.get("error"), dict) else {}
            message = clip(str(detail.get("message") or f"HTTP {status}"))
            code = status if isinstance(status, int) else None
            return BatchResult(custom_id, error=LLMError(f"model {self.model!r}: {message}", status=code,
                                                         rejected=code in REJECTED_STATUSES))
        missing = error if isinstance(error, dict) else {}
        reason = f"{missing.get('code') or 'error'}: {clip(str(missing.get('message') or 'no response'))}"
        return BatchResult(custom_id, error=LLMError(f"the batch request did not run ({reason})", rejected=False))

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """One batch API call; SDK errors become ``LLMError`` (``transient`` where a retry may help)."""
        client = self._client.anthropic_sdk() if self.provider == "anthropic" else self._client.openai_sdk()
        try:
            return await request()
        except (anthropic.AnthropicError, openai.OpenAIError) as err:
            prefix = "ANTHROPIC" if self.provider == "anthropic" else "OPENAI"
            message = describe(err, model=self.model, url=shown_url(str(client.base_url)), env_prefix=prefix,
                               timeout=self._client.config.timeout, retries=0)
            raise llm_error(self._client.redact(f"batch API: {message}"), err) from err


def _flat(params: dict[str, Any]) -> dict[str, Any]:
    """A request's SDK keyword arguments as the JSON body a batch line carries.

    ``extra_body`` is the body's own fields; headers cannot differ per request (the
    Anthropic API version travels on the batch's request instead: ``_anthropic_headers``).
    """
    body = {k: v for k, v in params.items() if k not in ("extra_body", "extra_headers", "extra_query", "timeout")}
    extra = params.get("extra_body")
    if isinstance(extra, dict):
        body.update(extra)
    return body


def _anthropic_headers(items: list[BatchItem]) -> dict[str, str] | None:
    """The API version that still takes sampling parameters, when a request sets one (``wire``)."""
    from .wire import SAMPLING_API_VERSION
    if any(k in i.params for i in items for k in ("temperature", "top_p", "top_k")):
        return {"anthropic-version": SAMPLING_API_VERSION}
    return None


def _anthropic_state(batch: Any) -> BatchState:
    counts = batch.request_counts
    finished = counts.succeeded + counts.errored + counts.canceled + counts.expired
    return BatchState(id=str(batch.id), status=str(batch.processing_status),
                      ended=batch.processing_status == "ended", total=finished + counts.processing, done=finished,
                      failed=counts.errored + counts.canceled + counts.expired)


def _openai_state(batch: Any) -> BatchState:
    counts = batch.request_counts
    total, completed, failed = (counts.total, counts.completed, counts.failed) if counts else (0, 0, 0)
    error = None
    if batch.status == "failed":
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        error = "; ".join(clip(str(e.message)) for e in errors[:3]) or "the provider failed the batch"
    return BatchState(id=str(batch.id), status=str(batch.status), ended=batch.status in _OPENAI_ENDED, total=total,
                      done=completed + failed, failed=failed, error=error)


def epoch_now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()
