"""The engine every LLM job kind shares: a job's request cap and usage, and ordered answers.

A kind plans its requests as numbers ``0, 1, 2, …`` (a stim generator's chunks; a rollout's
trajectories) and gives ``AnswerStream.ordered`` a function that sends request ``n`` and
returns the JSON it keeps of the answer. The stream

* skips every request the job's answer log already holds (``store.answers``): after a
  crash only the requests that were in flight are sent again;
* sends the rest at most ``JobLLM``'s limit at once, under the provider's shared limiter
  (``llm.limiter``), and no further ahead than ``window`` requests past the first
  unanswered one (a bounded reorder buffer);
* appends each answer to the log (fsync) before anything else may use it;
* yields the answers in request order as soon as their prefix is complete, so lines built
  from them are committed while later requests are still out.

The first failure cancels the requests in flight; so does a cancellation (a deleted
target, a shutdown), at once — the answers logged so far are kept for the resume.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from ..llm import Answer, ChatAnswer, Completer, LLMError, Usage
from ..llm.batch import BatchAPI
from ..llm.prices import PriceTable
from ..store.answers import AnswerLog, read_bills, read_usage, write_usage
from .budget import Budget

__all__ = ["JobLLM", "AnswerStream", "USAGE_SAVE_SECONDS"]

USAGE_SAVE_SECONDS = 1.0

Send = Callable[[int], Awaitable[Any]]

log = logging.getLogger("stimserver.jobs")


class JobLLM:
    """The completer one job uses: a shared client, at most ``limit`` calls in flight, and usage.

    ``usage`` adds up the job's requests; ``attach`` makes it continue the totals a previous
    run of the job saved, and ``save`` writes them (at most every ``USAGE_SAVE_SECONDS``
    unless forced), so ``GET …/stim`` shows them and they survive a restart.
    """

    def __init__(self, client: Callable[[], Completer], limit: int) -> None:
        self._client = client
        self._sem = asyncio.Semaphore(limit)
        self.limit = limit
        self.usage = Usage()
        self.budget: Budget | None = None  # ``limit_spending``
        self._job_dir: Path | None = None
        self._saved_at = 0.0
        self._saving: asyncio.Lock | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def attach(self, job_dir: Path) -> None:
        if self._job_dir != job_dir:
            self._job_dir = job_dir
            self.usage = await asyncio.to_thread(_resumed_usage, job_dir)
            if self.budget is not None:
                self.budget.usage = self.usage

    async def save(self, force: bool = False) -> None:
        if force and self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._job_dir is None or (not force and time.monotonic() - self._saved_at < USAGE_SAVE_SECONDS):
            return
        if not any(self.usage.as_dict().values()):
            return  # a job that asked no model keeps no usage file
        self._saving = self._saving or asyncio.Lock()
        async with self._saving:
            self._saved_at = time.monotonic()
            try:
                await asyncio.to_thread(write_usage, self._job_dir, self.usage.as_dict())
            except OSError as e:  # usage is a report, not the output: never fail a job for it
                log.warning("could not save the usage of the job in %s: %s", self._job_dir.name, e.strerror or e)

    async def ask(self, *, model: str, prompt: str, temperature: float | None, max_tokens: int | None,
                  extra_kwargs: dict[str, Any] | None) -> Answer:
        client = self._client()
        async with self._sem:
            ask = getattr(client, "ask", None)
            if ask is not None:  # an LLMClient: retries and usage through the provider's limiter
                answer: Answer = await ask(model=model, prompt=prompt, temperature=temperature,
                                           max_tokens=max_tokens, extra_kwargs=extra_kwargs, usage=self.usage)
            else:  # a plain completer (tests): text only
                answer = Answer(await client.complete(model=model, prompt=prompt, temperature=temperature,
                                                      max_tokens=max_tokens, extra_kwargs=extra_kwargs))
                self.usage.requests += 1
        self._saved_later()
        return answer

    async def chat(self, *, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                   temperature: float | None, max_tokens: int | None,
                   extra_kwargs: dict[str, Any] | None) -> ChatAnswer:
        """A whole conversation's reply (``LLMClient.chat``), under this job's cap and usage."""
        client = self._client()
        chat = getattr(client, "chat", None)
        if chat is None:
            raise LLMError("this server's LLM client cannot send chat requests")
        async with self._sem:
            answer: ChatAnswer = await chat(model=model, messages=messages, tools=tools, temperature=temperature,
                                            max_tokens=max_tokens, extra_kwargs=extra_kwargs, usage=self.usage)
        self._saved_later()
        return answer

    def limit_spending(self, limit: float, prices: PriceTable) -> Budget:
        """Give this job a budget (``jobs.budget``) over its usage's cost, which its requests then check."""
        self.budget = Budget(limit, self.usage, prices)
        return self.budget

    def batches(self, model: str) -> BatchAPI:
        """``model``'s provider batch API (``llm.batch``) through this job's client."""
        batches = getattr(self._client(), "batches", None)
        if batches is None:
            raise LLMError("this server's LLM client cannot send batches")
        api: BatchAPI = batches(model)
        return api

    def _saved_later(self) -> None:
        # Not awaited: between an answer and its log line there must be no await a
        # shutdown's cancellation could land on, or an answered request would be lost.
        task = asyncio.ensure_future(self.save())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def complete(self, *, model: str, prompt: str, temperature: float | None, max_tokens: int | None,
                       extra_kwargs: dict[str, Any] | None) -> str:
        answer = await self.ask(model=model, prompt=prompt, temperature=temperature, max_tokens=max_tokens,
                                extra_kwargs=extra_kwargs)
        return answer.text


def _resumed_usage(job_dir: Path) -> Usage:
    """The usage a resumed job continues: rebuilt from the bills in its answer logs (exact: each logged
    answer once, whatever the last save of the usage file missed), with the failed attempts the usage
    file counted; the file alone for a job whose answers were logged without bills (an older version)."""
    saved = Usage.from_dict(read_usage(job_dir))
    bills, unbilled = read_bills(job_dir)
    if not bills or unbilled:
        return saved
    return Usage.from_billed(bills, retries=saved.retries, rate_limited=saved.rate_limited)


class AnswerStream:
    """The answer log ``name`` of a job, and requests sent through it in order."""

    def __init__(self, job_dir: Path, name: str, *, window: int, in_flight: int | None = None) -> None:
        self.job_dir = job_dir
        self.name = name
        self.window = max(1, window)
        self._log: AnswerLog | None = None
        # At most ``in_flight`` requests sent and not yet logged: a crash then re-asks no more
        # than that many (the job's LLM cap alone lets the next request go out while an
        # answer is still being written).
        self._slots = asyncio.Semaphore(in_flight) if in_flight else None
        self._logged = asyncio.Event()  # set by ``commit``: ``collected`` looks again

    async def __aenter__(self) -> AnswerStream:
        self._log = await asyncio.to_thread(AnswerLog.open, self.job_dir, self.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def log(self) -> AnswerLog:
        if self._log is None:
            raise RuntimeError("AnswerStream used outside `async with`")
        return self._log

    async def one(self, request: int, send: Send) -> Any:
        """Request ``request``'s answer: from the log, or sent now and logged."""
        if request in self.log.done:
            return self.log.done[request]
        if self._slots is None:
            return await self._ask_and_log(request, send)
        async with self._slots:
            return await self._ask_and_log(request, send)

    async def _ask_and_log(self, request: int, send: Send) -> Any:
        answer = await send(request)
        append = asyncio.ensure_future(asyncio.to_thread(self.log.append, request, answer))
        try:
            await asyncio.shield(append)
        except asyncio.CancelledError:
            # The thread writes on regardless: let it finish before the stream closes the log's
            # file, so the answer is kept and no write can land on a reused descriptor.
            await asyncio.gather(append, return_exceptions=True)
            raise
        return answer

    async def commit(self, answers: list[tuple[int, Any]]) -> None:
        """Log answers that arrived together (a batch's results): one write, one fsync, then wake ``collected``."""
        fresh = [(n, a) for n, a in answers if n not in self.log.done]
        if fresh:
            write = asyncio.ensure_future(asyncio.to_thread(self.log.append_many, fresh))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:  # as in ``_ask_and_log``: the thread finishes before the log closes
                await asyncio.gather(write, return_exceptions=True)
                raise
        self._logged.set()

    async def collected(self, first: int, count: int, fill: Callable[[], Awaitable[None]]) -> AsyncIterator[Any]:
        """The answers of requests ``first … first+count-1`` in order, as ``fill`` (which ``commit``s them,
        e.g. from provider batches) logs them; ``fill``'s failure ends the stream after what it logged."""
        task = asyncio.ensure_future(fill())
        try:
            for n in range(first, first + count):
                while n not in self.log.done:
                    if task.done():
                        task.result()  # its failure, if any
                        if n not in self.log.done:
                            raise RuntimeError(f"request {n} was never answered")
                    self._logged.clear()
                    if n in self.log.done:
                        break
                    waiter = asyncio.ensure_future(self._logged.wait())
                    try:
                        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                yield self.log.done[n]
            await task  # a fill that is still finishing (saving usage, its state)
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def ordered(self, first: int, count: int, send: Send) -> AsyncIterator[Any]:
        """The answers of requests ``first … first+count-1``, in that order, sent concurrently."""
        end = first + count
        tasks: dict[int, asyncio.Task[Any]] = {}
        following = first  # the next request to start
        try:
            for n in range(first, end):
                while following < end and following < n + self.window:
                    if following not in self.log.done:
                        tasks[following] = asyncio.ensure_future(self.one(following, send))
                    following += 1
                task = tasks.get(n)
                if task is None:
                    yield self.log.done[n]
                    continue
                waiting = {task, *tasks.values()}
                while not task.done():  # the head, unless a later request fails first
                    done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if task.done():  # yield what is answered before any later failure ends the stream
                        break
                    for t in done:
                        if not t.cancelled() and t.exception() is not None:
                            t.result()
                del tasks[n]
                yield task.result()
        finally:
            for t in tasks.values():
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks.values(), return_exceptions=True)

