"""Every change of a job's record, each made while holding the job's lock. Blocking.

Statuses go ``pending`` → ``running`` → ``complete`` | ``failed``. The record says what
should happen; the flock says whether a live process is doing it. A ``pending`` or
``running`` job whose lock is free has no writer: any runner may claim it and resume
from the committed lines. Every change to the record is made while holding the job's
lock (or, for a new job, the submit lock and then the job's lock), so two processes
never write it at once. ``locked_record`` is the one way to take the lock and read the
record; the files themselves belong to ``store.jobrecords``.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import atomic
from ..store import jobrecords as jr
from ..store.datasets import Datasets
from ..store.jobrecords import ACTIVE, JobRef, JobStatus
from ..store.locks import FileLock
from ..store.output import line_count
from ..store.paths import DataPaths
from ..store.records import now_iso
from .kinds import JobKind, JobPlan, JobSource

__all__ = ["JobBusy", "MAX_INTERRUPTIONS", "Locked", "locked_record", "submit", "discard", "claim", "finish", "requeue",
           "count_death", "resume_hint", "worker_identity"]

MAX_INTERRUPTIONS = 5  # runner deaths in a row without a committed line before the job is failed
RESUBMIT_LOCK_WAIT = 5.0
# A finished job's lock is held only while a writer lets go of it (the runner that just wrote
# "complete", a liveness check): discard waits that long for it rather than refuse at once.
FINISHED_LOCK_WAIT = 1.0

Record = dict[str, Any]


class JobBusy(Exception):
    """A job's lock stayed taken while it had to change hands."""


def worker_identity(runner_id: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "runner": runner_id}


@dataclass
class Locked:
    """A job whose lock this process holds, with its record as read under the lock."""

    ref: JobRef
    paths: DataPaths
    lock: FileLock
    record: Record | None
    handed_over: bool = False

    @property
    def job_dir(self) -> Path:
        return self.ref.job_dir(self.paths)

    @property
    def status(self) -> str | None:
        return None if self.record is None else self.record.get("status")

    def write(self, record: Record) -> Record:
        jr.write_record(self.job_dir, record)
        self.record = record
        return record

    def hand_over(self) -> FileLock:
        """Keep the lock past the ``with`` block: the caller now releases it (a claim's runner)."""
        self.handed_over = True
        return self.lock


@contextmanager
def locked_record(paths: DataPaths, ref: JobRef, statuses: Collection[str] | None = ACTIVE,
                  wait: float = 0.0) -> Iterator[Locked | None]:
    """Take the job's lock if it is free (or frees within ``wait`` seconds) and read its record under it.

    Yields None — and holds nothing — when a writer holds the lock, the target is gone,
    or the record's status is not one of ``statuses`` (``None``: any record, even none).
    The lock is released on leaving, unless the body ended normally after
    ``Locked.hand_over`` (a claim gives it to the runner); on an error it is always released.
    """
    lock = jr.wait_job_lock(ref.job_dir(paths), wait)
    if lock is None:
        yield None
        return
    try:
        record = jr.read_record(ref.job_dir(paths))
        if statuses is not None and (record is None or record.get("status") not in statuses):
            lock.release()
            yield None
            return
        job = Locked(ref, paths, lock, record)
        yield job
    except BaseException:
        lock.release()
        raise
    if not job.handed_over:
        lock.release()


def submit(paths: DataPaths, kind: JobKind, ref: JobRef, target_record: Record, datasets: Datasets) -> Record:
    """The job to report after a run request: the current one, or a new pending one.

    A pending, running or complete job is returned as it is (runs are idempotent); a
    failed one resumes (same id, its committed lines kept) while the target still asks for
    the same job; otherwise, or with none, a new job starts (new id, empty output). Raises
    ``ConfigProblem`` if the target cannot run, ``JobBusy`` if a writer will not let go.
    """
    job_dir = ref.job_dir(paths)
    job_dir.parent.mkdir(parents=True, exist_ok=True)
    submitting = FileLock.acquire(jr.submit_lock(job_dir), blocking=True)
    assert submitting is not None  # a blocking acquire waits rather than give up
    with submitting:
        current = jr.read_record(job_dir)
        if current is not None and current.get("status") in (*ACTIVE, JobStatus.COMPLETE):
            return current
        source = JobSource(paths, ref.user, ref.repo, ref.target, target_record, datasets)
        plan = kind.plan(source)
        lock = jr.wait_job_lock(job_dir, RESUBMIT_LOCK_WAIT)
        if lock is None:
            raise JobBusy(f"the previous {ref.kind} job of target '{ref.target}' is still shutting down; "
                          "try again in a moment")
        with lock:
            current = jr.read_record(job_dir)  # as it is now that we hold the lock
            jr.stop_marker(job_dir).unlink(missing_ok=True)  # left by a stop that died half-way
            if current is not None and _resumable(kind, current, plan):
                # A failed job of the same config resumes from its committed lines: same id,
                # same lines, its crash-loop count reset. Starting over is DELETE …/output.
                record = {**kind.resumed(current, plan), "status": JobStatus.PENDING.value, "error": None,
                          "finished_at": None, "worker": None, "orphaned_at": None, "stalled_deaths": 0,
                          "progress_line": line_count(job_dir)}
                jr.write_record(job_dir, record)
                return record
            record = {
                "job_id": jr.next_job_id(paths), "kind": ref.kind, "status": JobStatus.PENDING.value,
                "config": plan.config, "expected_lines": plan.expected_lines, "error": None,
                "attempt": 0, "interruptions": 0, "stalled_deaths": 0, "progress_line": 0,
                "created_at": now_iso(), "started_at": None,
                "finished_at": None, "worker": None, "orphaned_at": None, "spec": plan.spec,
            }
            job_dir.mkdir(exist_ok=True)
            with _prepared(kind, plan, source, job_dir) as prepared:
                # Staged first: on a full disk nothing (not the old output either) is changed.
                staged = atomic.stage_json(jr.job_file(job_dir), record, job_dir.parent)
                try:
                    jr.reset_output(job_dir)
                    jr.move_in(prepared, job_dir)
                except BaseException:
                    staged.unlink(missing_ok=True)
                    raise
                atomic.commit_staged(staged, jr.job_file(job_dir))
        return record


def _resumable(kind: JobKind, current: Record, plan: JobPlan) -> bool:
    """A failed job whose target still asks for exactly this job: POST continues it."""
    return (current.get("status") == JobStatus.FAILED and isinstance(current.get("spec"), dict)
            and kind.same_job(current, plan))


@contextmanager
def _prepared(kind: JobKind, plan: JobPlan, source: JobSource, job_dir: Path) -> Iterator[Path]:
    """A fresh staging folder with the files ``kind.prepare`` wrote; removed on leaving."""
    staging = jr.fresh_staging(job_dir)
    try:
        kind.prepare(plan, source, staging)
        yield staging
    finally:
        jr.remove_staging(staging)


def discard(paths: DataPaths, ref: JobRef) -> bool:
    """Remove a finished job (record, output, checkpoints): the explicit fresh start.

    False when there is none; ``JobBusy`` when it is pending or running, or when a writer still
    holds its lock after ``FINISHED_LOCK_WAIT`` (the runner that wrote "complete" lets go a moment
    later; a DELETE from a client that saw "complete", on this host or another, can land in it).
    """
    job_dir = ref.job_dir(paths)
    seen = jr.read_record(job_dir)
    wait = 0.0 if seen is None or seen.get("status") in ACTIVE else FINISHED_LOCK_WAIT  # a run holds it for long
    with locked_record(paths, ref, None, wait) as job:
        if job is None:
            if jr.read_record(job_dir) is None:
                return False
            raise JobBusy(f"the {ref.kind} job of target '{ref.target}' is being written; try again in a moment")
        if job.record is None:
            return False
        if job.status in ACTIVE:
            raise JobBusy(f"the {ref.kind} job of target '{ref.target}' is {job.status}: wait until it is "
                          "complete or failed, then delete its output")
        jr.job_file(job_dir).unlink()  # first: a crash half-way leaves no record, so the rest is leftovers
        jr.reset_output(job_dir)
        return True


def finish(job_dir: Path, record: Record, status: JobStatus, error: str | None = None) -> Record:
    """Mark the job complete or failed; the caller holds its lock."""
    record = {**record, "status": JobStatus(status).value, "error": error, "finished_at": now_iso()}
    jr.write_record(job_dir, record)
    return record


def requeue(job_dir: Path, record: Record) -> Record:
    """Hand a job back (clean shutdown): pending, for the next runner; the caller holds its lock."""
    record = {**record, "status": JobStatus.PENDING.value, "worker": None}
    jr.write_record(job_dir, record)
    return record


def claim(paths: DataPaths, ref: JobRef, worker: dict[str, Any]) -> tuple[FileLock, Record] | None:
    """Take the job if it is pending or running with no live writer; (lock, record) or None."""
    job_dir = ref.job_dir(paths)
    with locked_record(paths, ref) as job:
        if job is None or job.record is None or jr.stop_marker(job_dir).exists():
            return None
        record = job.record
        lines = line_count(job_dir)
        if not isinstance(record.get("spec"), dict):
            finish(job_dir, record, JobStatus.FAILED, "this job cannot be resumed: its record holds no job spec "
                   f"(written by hand or by an older stimserver); POST /v1/repo/{ref.repo}/targets/{ref.target}/"
                   f"{ref.kind} to run it again from the start")
            return None
        if record["status"] == JobStatus.RUNNING:  # its last runner died while running it
            record = count_death(record, lines)
        stalled = int(record.get("stalled_deaths") or 0)
        if stalled > MAX_INTERRUPTIONS:
            last = record.get("worker") or {}
            finish(job_dir, record, JobStatus.FAILED,
                   f"the job's runner died {stalled} times in a row without committing a line: each run stopped "
                   f"at line {lines} of {record.get('expected_lines')}, so producing line {lines} (0-based) kills "
                   f"it (last runner: pid {last.get('pid')} on {last.get('host')}; look in its log for the cause, "
                   f"e.g. an out-of-memory kill); the {lines} committed lines are kept: {resume_hint(ref)}")
            return None
        attempt = int(record.get("attempt") or 0) + 1
        record = job.write({**record, "status": JobStatus.RUNNING.value, "attempt": attempt,
                            "started_at": record.get("started_at") or now_iso(),
                            "resumed_at": now_iso() if attempt > 1 else None,
                            "resumed_from_line": lines if attempt > 1 else None, "progress_line": lines,
                            "worker": worker, "orphaned_at": None})
        return job.hand_over(), record


def count_death(record: Record, lines: int) -> Record:
    """Count one runner death: against the limit only when no line was committed since the last one.

    ``progress_line`` is the committed count when the job was last claimed (or resumed), that
    is right after the previous death; a job that keeps committing is not crash-looping.
    """
    progressed = lines > int(record.get("progress_line") or 0)
    stalled = 0 if progressed else int(record.get("stalled_deaths") or 0) + 1
    return {**record, "interruptions": int(record.get("interruptions") or 0) + 1, "stalled_deaths": stalled,
            "progress_line": lines}


def resume_hint(ref: JobRef) -> str:
    return (f"POST /v1/repo/{ref.repo}/targets/{ref.target}/{ref.kind} to resume it from its committed lines "
            f"(or DELETE …/{ref.kind}/output first to start over)")
