"""Batch mode of a job: its requests go through the provider's batch API (``llm.batch``).

The job's unanswered requests are cut into batches of ``STIMSERVER_BATCH_SIZE``, submitted,
polled every ``STIMSERVER_BATCH_POLL_SECONDS``, and each ended batch's results are logged
(``AnswerStream.commit``: one write, one fsync) as they are read, so the kind turns them into
lines while later batches still run. ``batches.json`` in the job folder keeps every batch
the job started, written (fsync'd, atomically) *before* it is relied on:

* before a submit, its marker, request numbers and time (``id: null``): a crash between
  the submit and the next write leaves an entry that ``BatchAPI.find`` resolves on resume
  (the batch is adopted, or was never created and its requests are sent again);
* after the submit, its id; after each poll, its counts (the job's progress);
* once its results are logged, ``collected``.

A restart therefore polls the same batches and never submits one twice; a result whose
request is already answered is ignored. A request the batch missed (expired, cancelled, a
server error) goes into a later batch, up to ``MAX_ATTEMPTS`` tries in all, then its line
fails like a rejected request's. Every answer is counted into the job's usage at the batch
price (``batch_discount``). A budget (``jobs.budget``) bounds what is submitted: a batch is
cut to what fits beside the cost so far and the worst case of the batches still running. A
stop (the target deleted) cancels the job's running batches at the provider; a shutdown leaves
them running for the next runner.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..llm import LLMError
from ..llm.batch import BatchAPI, BatchItem, BatchResult, BatchState, epoch_now
from ..llm.chat import ChatAnswer
from ..llm.limiter import record_answer, with_cost
from ..store.atomic import read_replaced, write_json_atomic
from .budget import Budget
from .engine import AnswerStream, JobLLM
from .kinds import ResumableFailure

__all__ = ["BATCHES_FILE", "MAX_ATTEMPTS", "BatchRun", "read_batches", "batch_progress"]

BATCHES_FILE = "batches.json"
MAX_ATTEMPTS = 3
CANCEL_SECONDS = 10
POLL_FAILURES = 10  # polls in a row that fail before the job gives up (it resumes on the same batches)
log = logging.getLogger("stimserver.jobs")


def read_batches(job_dir: Path) -> dict[str, Any]:
    """The job's batch record (``{"batches": [...], "attempts": {...}}``), empty when it has none."""
    try:
        raw = orjson.loads(read_replaced(job_dir / BATCHES_FILE))
    except FileNotFoundError:
        raw = None
    except orjson.JSONDecodeError:  # written atomically: only a hand edit gets here
        log.warning("%s in %s is not JSON; its batches are not followed", BATCHES_FILE, job_dir)
        raw = None
    if not isinstance(raw, dict) or not isinstance(raw.get("batches"), list):
        return {"batches": [], "attempts": {}}
    raw.setdefault("attempts", {})
    return raw


def batch_progress(job_dir: Path) -> dict[str, Any] | None:
    """What the status shows of a job's batches: counts summed over those not yet collected, and their ids."""
    batches = read_batches(job_dir)["batches"]
    if not batches:
        return None
    running = [b for b in batches if not b.get("collected")]
    return {"submitted": len(batches), "running": len(running),
            "requests": sum(len(b.get("requests") or ()) for b in running),
            "done": sum(int(b.get("done") or 0) for b in running),
            "failed": sum(int(b.get("failed") or 0) for b in running),
            "ids": [b["id"] for b in running if b.get("id")]}


@dataclass
class BatchRun:
    """One job's batch mode: what it asks (``item``), how it keeps answers (``keep``), and where."""

    job_dir: Path
    job_id: str
    api: BatchAPI
    llm: JobLLM
    stream: AnswerStream
    item: Callable[[int, str], BatchItem]             # request n, its custom_id → the batch request
    keep: Callable[[int, BatchResult], Any]            # a final result → the JSON its answer log keeps
    worst_usd: Callable[[int], float] | None           # request n's worst-case cost, with a budget
    budget: Budget | None
    poll_seconds: float
    batch_size: int
    on_rejections: Callable[[list[BatchResult]], Awaitable[None]] | None = None  # a whole batch rejected
    stopping: Callable[[], bool] = lambda: False  # a cancellation is a stop: cancel the batches at the provider

    def __post_init__(self) -> None:
        self._state = read_batches(self.job_dir)
        self._save_lock = asyncio.Lock()

    # -- the record ----------------------------------------------------------------------

    async def _save(self) -> None:
        async with self._save_lock:
            await asyncio.to_thread(write_json_atomic, self.job_dir / BATCHES_FILE, self._state)

    def _attempts(self, n: int) -> int:
        return int(self._state["attempts"].get(str(n), 0))

    # -- the run -------------------------------------------------------------------------

    async def fill(self, wanted: list[int]) -> None:
        """Answer every request of ``wanted`` the log lacks, through batches; returns when all are logged."""
        done = self.stream.log.done
        for entry in self._state["batches"]:
            if not entry.get("collected") and entry.get("id") is None:
                await self._recover(entry)
        running = [e for e in self._state["batches"] if not e.get("collected")]
        if running:
            log.info("job %s resumes %d provider batch(es): %s", self.job_id, len(running),
                     ", ".join(str(e["id"]) for e in running))
        queued = {n for e in running for n in e["requests"]}
        todo = [n for n in wanted if n not in done and n not in queued]
        polls: set[asyncio.Task[list[int]]] = {asyncio.ensure_future(self._follow(e)) for e in running}
        try:
            while todo or polls:
                todo = await self._submit_what_fits(todo, polls)
                if not polls:
                    if todo:  # nothing running, and not one more request fits the budget
                        assert self.budget is not None and self.worst_usd is not None
                        raise self.budget.exhausted(self.worst_usd(todo[0]))
                    break
                finished, polls = await asyncio.wait(polls, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    todo = sorted({*todo, *task.result()})  # the missed requests go round again
        except asyncio.CancelledError:
            if self.stopping():  # the target is being deleted: stop paying for answers no one will read
                await asyncio.shield(self._cancel_running())
            raise
        finally:
            for task in polls:
                task.cancel()
            await asyncio.gather(*polls, return_exceptions=True)

    async def _cancel_running(self) -> None:
        """Cancel the job's running batches at the provider (best effort, bounded: the stop waits for it)."""
        running = [e["id"] for e in self._state["batches"] if not e.get("collected") and e.get("id")]
        try:
            async with asyncio.timeout(CANCEL_SECONDS):
                for batch_id in running:
                    try:
                        await self.api.cancel(batch_id)
                        log.info("job %s stopped: provider batch %s cancelled", self.job_id, batch_id)
                    except LLMError as e:
                        log.warning("job %s stopped: could not cancel provider batch %s: %s", self.job_id,
                                    batch_id, e)
        except TimeoutError:
            log.warning("job %s stopped: cancelling its provider batches took over %d s", self.job_id,
                        CANCEL_SECONDS)

    async def _submit_what_fits(self, todo: list[int], polls: set[asyncio.Task[list[int]]]) -> list[int]:
        while todo:
            size = min(self.batch_size, len(todo))
            reserve = 0.0  # the worst case of the batch, which the budget's later batches must leave room for
            if self.budget is not None and self.worst_usd is not None:
                reserved = sum(e.get("reserved_usd", 0.0) for e in self._state["batches"] if not e.get("collected"))
                room = self.budget.limit - self.budget.spent - reserved
                fit = 0
                for n in todo[:size]:
                    worst = self.worst_usd(n)
                    if reserve + worst > room:
                        break
                    reserve += worst
                    fit += 1
                size = fit
                if size == 0:
                    return todo
            chunk, todo = todo[:size], todo[size:]
            entry = await self._submit(chunk, reserve)
            polls.add(asyncio.ensure_future(self._follow(entry)))
        return todo

    async def _submit(self, requests: list[int], reserve: float) -> dict[str, Any]:
        marker = f"{self.job_id}-{secrets.token_hex(6)}"
        attempt = max(self._attempts(n) for n in requests) + 1
        items = [self.item(n, f"j{self.job_id}-r{n}-a{attempt}") for n in requests]
        entry: dict[str, Any] = {"id": None, "marker": marker, "since": epoch_now(), "provider": self.api.provider,
                                 "model": self.api.model, "requests": requests, "attempt": attempt,
                                 "status": "submitting", "done": 0, "failed": 0, "collected": False,
                                 "reserved_usd": reserve}
        for n in requests:
            self._state["attempts"][str(n)] = self._attempts(n) + 1
        self._state["batches"].append(entry)
        await self._save()  # the intent first: a crash after the submit finds the batch by it
        state = await self._submit_once(entry, items)
        self._update(entry, state)
        await self._save()
        log.info("job %s submitted batch %s: %d requests (attempt %d)", self.job_id, state.id, len(requests),
                 attempt)
        return entry

    async def _submit_once(self, entry: dict[str, Any], items: list[BatchItem]) -> BatchState:
        """Submit, retrying transient failures; before a retry, look for the batch the failed call may have
        created after all (a timeout can come after the provider accepted it), so it is never paid twice."""
        retries = self.api.client.config.max_retries
        for attempt in range(retries + 1):
            try:
                return await self.api.submit(items, entry["marker"])
            except LLMError as e:
                if not e.transient or attempt == retries:
                    raise ResumableFailure(f"could not submit a batch: {e}") from None
                await asyncio.sleep(min(30.0, 0.5 * 2 ** attempt) if e.retry_after is None else e.retry_after)
            found = await self._retrying("list batches", lambda: self.api.find(
                entry["marker"], len(items), float(entry["since"]),
                {e["id"] for e in self._state["batches"] if e.get("id")}))
            if found is not None:
                return found
        raise AssertionError("unreachable")

    async def _recover(self, entry: dict[str, Any]) -> None:
        """An entry a crash left without an id: adopt its batch, or forget it (never created)."""
        known = {e["id"] for e in self._state["batches"] if e.get("id")}
        found = await self._retrying("list batches", lambda: self.api.find(
            entry["marker"], len(entry["requests"]), float(entry["since"]), known))
        if found is None:
            self._state["batches"].remove(entry)
            for n in entry["requests"]:
                self._state["attempts"][str(n)] = max(0, self._attempts(n) - 1)
            log.info("job %s: batch %s was never created; its requests are sent again", self.job_id, entry["marker"])
        else:
            self._update(entry, found)
            log.info("job %s: adopted batch %s, submitted before a crash", self.job_id, found.id)
        await self._save()

    def _update(self, entry: dict[str, Any], state: BatchState) -> bool:
        before = (entry.get("id"), entry.get("status"), entry.get("done"), entry.get("failed"))
        entry.update(id=state.id, status=state.status, done=state.done, failed=state.failed)
        return before != (entry["id"], entry["status"], entry["done"], entry["failed"])

    async def _follow(self, entry: dict[str, Any]) -> list[int]:
        """Poll one batch to its end, log its results; the requests it missed that may go again."""
        failures = 0
        while True:
            try:
                state = await self.api.poll(entry["id"])
            except LLMError as e:
                failures += 1
                if not e.transient or failures >= POLL_FAILURES:
                    raise ResumableFailure(f"could not poll provider batch {entry['id']}: {e}") from None
                await asyncio.sleep(self.poll_seconds)
                continue
            failures = 0
            if self._update(entry, state):
                await self._save()
            if state.ended:
                if state.error is not None and state.done == 0:
                    raise ResumableFailure(f"the provider failed batch {state.id}: {state.error}")
                return await self._collect(entry)
            await asyncio.sleep(self.poll_seconds)

    async def _collect(self, entry: dict[str, Any]) -> list[int]:
        by_id = {f"j{self.job_id}-r{n}-a{entry['attempt']}": n for n in entry["requests"]}
        results: dict[int, BatchResult] = {}
        try:
            async with contextlib.aclosing(self.api.results(entry["id"])) as results_of:  # closed on a cancel too
                async for result in results_of:
                    n = by_id.get(result.custom_id)
                    if n is not None:
                        results.setdefault(n, result)
        except LLMError as e:
            raise ResumableFailure(f"could not read the results of provider batch {entry['id']}: {e}") from None
        done = self.stream.log.done
        if self.on_rejections is not None and results and all(
                r.error is not None and r.error.rejected for r in results.values()):
            await self.on_rejections(list(results.values()))
        keep: list[tuple[int, Any]] = []
        missed: list[int] = []
        for n in entry["requests"]:
            got = results.get(n)
            if n in done:
                continue
            if got is None or (got.answer is None and not (got.error and got.error.rejected)):
                if self._attempts(n) < MAX_ATTEMPTS:
                    missed.append(n)
                    continue
                why = got.error if got is not None and got.error else LLMError("no result for the request")
                got = BatchResult(got.custom_id if got else "", error=LLMError(
                    f"{why} (after {self._attempts(n)} batch attempts)", rejected=True))
            if got.answer is not None:
                got = BatchResult(got.custom_id, answer=self._count(got.answer))
            keep.append((n, self.keep(n, got)))
        await self.stream.commit(keep)
        await self.llm.save(force=True)
        entry["collected"] = True
        entry["status"] = "collected"
        await self._save()
        log.info("job %s: batch %s collected: %d answers logged, %d to send again", self.job_id, entry["id"],
                 len(keep), len(missed))
        return missed

    def _count(self, answer: ChatAnswer) -> ChatAnswer:
        """Price an answer at the batch price into the job's usage; the answer, carrying its price."""
        cost = self.api.client.batch_cost(self.api.model, answer)
        record_answer(answer, provider=self.api.provider, model=self.api.model, usage=self.llm.usage, cost=cost)
        return with_cost(answer, cost)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """A batch API call with backoff on transient errors (``STIMSERVER_LLM_MAX_RETRIES``)."""
        retries = self.api.client.config.max_retries
        for attempt in range(retries + 1):
            try:
                return await call()
            except LLMError as e:
                if not e.transient or attempt == retries:
                    raise ResumableFailure(f"could not {what}: {e}") from None
                await asyncio.sleep(min(30.0, 0.5 * 2 ** attempt) if e.retry_after is None else e.retry_after)
        raise AssertionError("unreachable")

