"""Jobs without a live writer: orphans found by status reads and scans, and stops. Blocking.

A ``pending`` or ``running`` job whose lock is free has nobody writing it. A runner's scan
hands a ``running`` one back as ``pending`` (``requeue_orphan``); a status read with no
runner alive on the data directory marks it orphaned and, ``orphan_seconds`` later, failed
(``observe_orphan``), so the official client, which polls forever, never hangs on a dead
job. ``stop_job`` stops a job wherever it runs (a target being deleted). Each change goes
through ``transitions.locked_record``.
"""
from __future__ import annotations

import calendar
import time

from ..store import jobrecords as jr
from ..store.errors import NoSpace
from ..store.jobrecords import ACTIVE, JobRef, JobStatus
from ..store.output import line_count
from ..store.paths import DataPaths
from ..store.presence import live_runners
from ..store.records import now_iso
from .transitions import Record, count_death, finish, locked_record, resume_hint

__all__ = ["requeue_orphan", "observe_orphan", "stop_job"]


def requeue_orphan(paths: DataPaths, ref: JobRef) -> bool:
    """A ``running`` job without a writer becomes ``pending`` (counted as an interruption)."""
    with locked_record(paths, ref, (JobStatus.RUNNING,)) as job:
        if job is None or job.record is None:
            return False
        job.write({**count_death(job.record, line_count(ref.job_dir(paths))), "status": JobStatus.PENDING.value,
                   "worker": None})
        return True


def _epoch(iso: str) -> float:
    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))


def observe_orphan(paths: DataPaths, ref: JobRef, orphan_seconds: float) -> Record | None:
    """For a status read of an active job: what to report if nobody runs it.

    Returns None when a writer holds the job or some runner is alive (it will claim the
    job within its scan interval), the record as it is when it is no longer active.
    Otherwise the job is an orphan: the first read marks it ``pending`` with
    ``orphaned_at``; a read ``orphan_seconds`` later marks it failed. On a full disk the
    mark cannot be written: the read then reports the record as it is (never a 507).
    """
    try:
        return _observe_orphan(paths, ref, orphan_seconds)
    except NoSpace:
        return None


def _observe_orphan(paths: DataPaths, ref: JobRef, orphan_seconds: float) -> Record | None:
    job_dir = ref.job_dir(paths)
    with locked_record(paths, ref, None) as job:
        if job is None:
            return None
        record = job.record
        if record is None or record.get("status") not in ACTIVE:
            return record
        if live_runners(paths) > 0:
            return None
        now = time.time()
        if record.get("orphaned_at") is None:
            if record["status"] == JobStatus.RUNNING:
                record = count_death(record, line_count(job_dir))
            record = {**record, "status": JobStatus.PENDING.value, "worker": None, "orphaned_at": now_iso()}
            if orphan_seconds > 0:
                return job.write(record)
        if now - _epoch(record["orphaned_at"]) >= orphan_seconds:
            lines = line_count(job_dir)
            record = finish(job_dir, record, JobStatus.FAILED,
                            f"no job runner took this job up within {orphan_seconds:g} s (it stopped at line "
                            f"{lines} of {record.get('expected_lines')}): start `stimserver serve` with jobs "
                            f"enabled or `stimserver worker` on this data directory, then {resume_hint(ref)}")
        return record


def stop_job(paths: DataPaths, ref: JobRef, timeout: float) -> bool:
    """Stop the job wherever it runs and wait for its writer to let go; False on timeout.

    Only a pending or running job is stopped: a stop marker asks its writer in another
    process to stop (writers look for it at least twice a second), and once the lock is
    ours the record is marked failed so that nobody resumes it. A lock held for anything
    else (an import) is not waited for.
    """
    job_dir = ref.job_dir(paths)
    record = jr.read_record(job_dir)
    if record is None or record.get("status") not in ACTIVE:
        return True
    marker = jr.stop_marker(job_dir)
    try:
        marker.touch()
    except FileNotFoundError:
        return True  # the target is gone
    try:
        deadline = time.monotonic() + timeout
        while True:
            with locked_record(paths, ref, None) as job:
                if job is not None:
                    if job.record is not None and job.status in ACTIVE:
                        finish(job_dir, job.record, JobStatus.FAILED, f"stopped: the {ref.kind} job was stopped "
                               f"(e.g. its target was deleted) at line {line_count(job_dir)}")
                    return True
            if not job_dir.parent.is_dir():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
    finally:
        marker.unlink(missing_ok=True)
