"""Running one claimed job: the kind's lines → batches → ``OutputWriter``, and how it ends.

The runner claims a job and hands it here with its lock. The kind's producer feeds a
queue; this side commits lines in batches (``flush_lines`` lines or ``flush_seconds``,
whichever comes first) with ``OutputWriter.append`` in a thread, so fsync never blocks
the event loop. The job ends ``complete`` (every expected line durable), ``failed`` (an
``error`` a user can act on), or — when cancelled for a shutdown — ``pending`` again,
for the next runner.
"""
from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..llm import Completer, LLMError
from ..store import atomic, jobrecords
from ..store.datasets import Datasets
from ..store.errors import NoSpace, StoreError
from ..store.jobrecords import JobRef, JobStatus
from ..store.locks import FileLock
from ..store.output import OutputWriter, encode
from ..store.paths import DataPaths
from . import transitions
from .budget import BudgetExhausted
from .engine import JobLLM
from .kinds import JobFailed, JobKind, JobRun, ResumableFailure

__all__ = ["Execution", "JobLLM", "execute", "describe", "record_end", "wait_for"]

log = logging.getLogger("stimserver.jobs")
T = TypeVar("T")

IDLE_CHECK_SECONDS = 0.5
STOPPED = "stopped: the job was stopped (e.g. its target was deleted)"
_END = object()


async def wait_for(aw: Awaitable[T], seconds: float) -> T | None:
    """``aw``'s result, or None after ``seconds``.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that arrives
    as ``aw`` completes, which would leave a cancelled loop running forever.
    """
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        return None


class _Stopped(Exception):
    """The job was asked to stop (its target is being deleted)."""


@dataclass
class Execution:
    """One claimed job and what running it needs; ``lock`` is its writer lock, held."""

    ref: JobRef
    paths: DataPaths
    kind: JobKind
    record: dict[str, Any]
    lock: FileLock
    llm: Completer
    datasets: Datasets
    flush_lines: int
    flush_seconds: float
    on_lines: Callable[[int, str], None] | None
    stopping: Callable[[], bool]  # True when a cancellation means "stop", not "shut down"


async def execute(ex: Execution) -> None:
    """Run the job to its end and record that end; never raises but a cancellation."""
    ref, record = ex.ref, ex.record
    job_dir = ref.job_dir(ex.paths)
    writer: OutputWriter | None = None
    try:
        try:
            await asyncio.to_thread(atomic.ensure_reserve, ex.paths.root)  # room to record a full disk
            writer = await asyncio.to_thread(OutputWriter.open, job_dir, ex.lock)
            if writer.lines:
                log.info("job %s %s resumes at line %d", record["job_id"], ref, writer.lines)
            await _write(ex, writer)
            expected = record.get("expected_lines")
            if writer.lines != expected:
                raise JobFailed(f"the job produced {writer.lines} lines, expected {expected}")
            await asyncio.to_thread(record_end, ex, transitions.finish, job_dir, record, JobStatus.COMPLETE)
            log.info("job %s %s complete: %d lines", record["job_id"], ref, writer.lines)
        except asyncio.CancelledError:
            if ex.stopping():
                record_end(ex, transitions.finish, job_dir, record, JobStatus.FAILED, STOPPED)
            else:  # shutdown: the next runner resumes it
                record_end(ex, transitions.requeue, job_dir, record)
            raise
        except _Stopped:
            await asyncio.to_thread(record_end, ex, transitions.finish, job_dir, record, JobStatus.FAILED, STOPPED)
        except Exception as exc:
            error = describe(exc, ref, record)
            log.warning("job %s %s failed: %s", record["job_id"], ref, error)
            await asyncio.to_thread(record_end, ex, transitions.finish, job_dir, record, JobStatus.FAILED, error)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("job %s %s: could not record its end", record.get("job_id"), ref)
    finally:
        if writer is not None:
            writer.close()


def record_end(ex: Execution, change: Callable[..., object], *args: Any) -> None:
    """Write how the job ended, even on a full disk: then the data dir's reserve is given up for it.

    The reserve (``atomic.ensure_reserve``) is the room this one small record needs when
    the job's own output filled the disk; it is taken again when the next job starts.
    """
    try:
        change(*args)
    except NoSpace:
        if not atomic.release_reserve(ex.paths.root):
            raise
        log.warning("job %s %s: the disk is full; the reserve was released to record its end",
                    ex.record.get("job_id"), ex.ref)
        change(*args)


async def _write(ex: Execution, writer: OutputWriter) -> None:
    job_dir = ex.ref.job_dir(ex.paths)
    marker = jobrecords.stop_marker(job_dir)
    run = JobRun(job_id=ex.record["job_id"], job_dir=job_dir, spec=ex.record["spec"], start=writer.lines,
                 llm=ex.llm, datasets=ex.datasets, data_root=ex.paths.root,
                 stopping=lambda: ex.stopping() or marker.exists())
    if isinstance(ex.llm, JobLLM):  # usage continues what an earlier run of this job saved
        await ex.llm.attach(job_dir)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=ex.flush_lines * 4)

    async def pump() -> None:
        try:
            async for line in ex.kind.produce(run):
                await queue.put(line)
            await queue.put(_END)
        except Exception as exc:
            await queue.put(exc)

    producer = asyncio.create_task(pump())
    loop = asyncio.get_running_loop()
    batch: list[bytes] = []
    due = 0.0
    try:
        while True:
            # Wait for a line until the batch is due; with no batch, wake up now and
            # then anyway to look for a stop request.
            timeout = max(0.0, due - loop.time()) if batch else IDLE_CHECK_SECONDS
            item = await wait_for(queue.get(), timeout)
            if isinstance(item, dict):
                if not batch:
                    due = loop.time() + ex.flush_seconds
                batch.append(encode(item))
                if len(batch) < ex.flush_lines and loop.time() < due:
                    continue
            if batch:  # full, due, or the producer ended or failed: commit what there is
                await asyncio.to_thread(writer.append, batch)
                if ex.on_lines is not None:
                    ex.on_lines(len(batch), ex.ref.kind)
                batch = []
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if await asyncio.to_thread(marker.exists):
                raise _Stopped()
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        if isinstance(ex.llm, JobLLM):
            await asyncio.shield(ex.llm.save(force=True))  # also on a cancellation: keep the totals


def describe(exc: BaseException, ref: JobRef, record: dict[str, Any]) -> str:
    """The ``error`` shown to the user: what went wrong and what to do; no traceback, no secret."""
    resume = f"POST /v1/repo/{ref.repo}/targets/{ref.target}/{ref.kind} to resume it from its committed lines"
    if isinstance(exc, NoSpace):
        return f"{exc.message}; free some space in the server's data directory, then {resume}"
    if isinstance(exc, BudgetExhausted):
        return (f"{exc}; the committed lines are kept: raise max_cost_usd on the target (create it again with the "
                f"new value), then {resume}")
    if isinstance(exc, ResumableFailure):
        return f"{exc}; the committed lines are kept: fix that, then {resume}"
    if isinstance(exc, (JobFailed, LLMError, StoreError)):
        return str(exc)
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return (f"the disk is full: the {ref.kind} job of target '{ref.target}' could not write its files; "
                    f"free some space in the server's data directory, then {resume}")
        return f"storage error while writing the job's output: {exc.strerror or exc}"
    log.error("job %s %s crashed", record.get("job_id"), ref, exc_info=exc)
    return f"internal error while running the job ({type(exc).__name__}); see the server log"
