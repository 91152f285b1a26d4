"""A job's state on disk, and every transition of it. Blocking: call from a thread.

Files of one job (``kind`` is ``stim`` or ``rollout``), beside the target's record::

    targets/<t>/<kind>/job.json        the record (status, config, spec, counters)
    targets/<t>/<kind>/output.jsonl    committed lines + output.idx (store.output)
    targets/<t>/<kind>/<checkpoint>.json  e.g. questions-0.json, written before its lines
    targets/<t>/<kind>.lock            flock held by the one process writing the job
    targets/<t>/.<kind>.submit.lock    serialises submissions of a new job
    targets/<t>/.<kind>.stop           asks the job's writer, wherever it runs, to stop

Statuses go ``pending`` → ``running`` → ``complete`` | ``failed``. The record says what
should happen; the flock says whether a live process is doing it. A ``pending`` or
``running`` job whose lock is free has no writer: any runner may claim it and resume
from the committed lines. Every change to the record is made while holding the job's
lock (or, for a new job, the submit lock and then the job's lock), so two processes
never write it at once.

Runner presence: each running ``JobRunner`` holds an flock on a file in
``DATA/runners/``, so anyone can count the live runners of a data directory.
"""
from __future__ import annotations

import calendar
import fcntl
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..datasets import Datasets
from ..store.atomic import fsync_dir, write_json_atomic
from ..store.locks import FileLock, try_lock
from ..store.output import lock_path, line_count
from ..store.paths import DataPaths
from ..store.records import Records, now_iso
from .kinds import JobKind, JobSource

__all__ = ["ACTIVE", "JobRef", "JobBusy", "MAX_INTERRUPTIONS", "read_record", "submit", "claim", "finish",
           "requeue", "requeue_orphan", "observe_orphan", "stop_job", "stop_marker", "find_active", "Presence",
           "live_runners", "worker_identity"]

ACTIVE = ("pending", "running")
MAX_INTERRUPTIONS = 5  # runner deaths in one job before it is failed instead of resumed again
RESUBMIT_LOCK_WAIT = 5.0


class JobBusy(Exception):
    """A job's lock stayed taken while it had to change hands."""


@dataclass(frozen=True)
class JobRef:
    user: str
    repo: str
    target: str
    kind: str

    def job_dir(self, paths: DataPaths) -> Path:
        return paths.job_dir(self.user, self.repo, self.target, self.kind)

    def __str__(self) -> str:
        return f"{self.user}/{self.repo}/{self.target}/{self.kind}"


def job_file(job_dir: Path) -> Path:
    return job_dir / "job.json"


def stop_marker(job_dir: Path) -> Path:
    return job_dir.parent / f".{job_dir.name}.stop"


def read_record(job_dir: Path) -> dict[str, Any] | None:
    try:
        value = orjson.loads(job_file(job_dir).read_bytes())
    except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_record(job_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(job_file(job_dir), record)


def worker_identity(runner_id: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "runner": runner_id}


def _job_lock(job_dir: Path) -> FileLock | None:
    """The job's lock if free; None if taken or the target is gone (never recreates it)."""
    if not job_dir.parent.is_dir():
        return None
    return FileLock.acquire(lock_path(job_dir), blocking=False)


def _wait_job_lock(job_dir: Path, seconds: float) -> FileLock | None:
    deadline = time.monotonic() + seconds
    while True:
        lock = _job_lock(job_dir)
        if lock is not None or time.monotonic() >= deadline:
            return lock
        time.sleep(0.05)


def _reset_output(job_dir: Path) -> None:
    """Remove a previous attempt's output and checkpoints (everything but job.json)."""
    if not job_dir.is_dir():
        return
    for name in sorted(os.listdir(job_dir), key=lambda n: n != "output.idx"):  # index first
        path = job_dir / name
        if name != "job.json" and path.is_file():
            path.unlink()
    fsync_dir(job_dir)


# -- transitions -------------------------------------------------------------------------

def submit(paths: DataPaths, kind: JobKind, ref: JobRef, target_record: dict[str, Any],
           datasets: Datasets) -> dict[str, Any]:
    """The job to report after a run request: the current one, or a new pending one.

    A pending, running or complete job is returned as it is (runs are idempotent); a
    failed one, or none, is replaced by a new job (new id, empty output). Raises
    ``ConfigProblem`` if the target cannot run, ``JobBusy`` if a writer will not let go.
    """
    job_dir = ref.job_dir(paths)
    job_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock.acquire(job_dir.parent / f".{ref.kind}.submit.lock", blocking=True):
        current = read_record(job_dir)
        if current is not None and current.get("status") in (*ACTIVE, "complete"):
            return current
        plan = kind.plan(JobSource(paths, ref.user, ref.repo, ref.target, target_record, datasets))
        lock = _wait_job_lock(job_dir, RESUBMIT_LOCK_WAIT)
        if lock is None:
            raise JobBusy(f"the previous {ref.kind} job of target '{ref.target}' is still shutting down; "
                          "try again in a moment")
        with lock:
            _reset_output(job_dir)
            stop_marker(job_dir).unlink(missing_ok=True)  # left by a stop that died half-way
            record = {
                "job_id": Records(paths).next_job_id(), "kind": ref.kind, "status": "pending",
                "config": plan.config, "expected_lines": plan.expected_lines, "error": None,
                "attempt": 0, "interruptions": 0, "created_at": now_iso(), "started_at": None,
                "finished_at": None, "worker": None, "orphaned_at": None, "spec": plan.spec,
            }
            job_dir.mkdir(exist_ok=True)
            write_record(job_dir, record)
        return record


def finish(job_dir: Path, record: dict[str, Any], status: str, error: str | None = None) -> dict[str, Any]:
    """Mark the job complete or failed; the caller holds its lock."""
    record = {**record, "status": status, "error": error, "finished_at": now_iso()}
    write_record(job_dir, record)
    return record


def requeue(job_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Hand a job back (clean shutdown): pending, for the next runner; the caller holds its lock."""
    record = {**record, "status": "pending", "worker": None}
    write_record(job_dir, record)
    return record


def claim(paths: DataPaths, ref: JobRef, worker: dict[str, Any]) -> tuple[FileLock, dict[str, Any]] | None:
    """Take the job if it is pending or running with no live writer; (lock, record) or None."""
    job_dir = ref.job_dir(paths)
    lock = _job_lock(job_dir)
    if lock is None:
        return None
    try:
        record = read_record(job_dir)
        if record is None or record.get("status") not in ACTIVE or stop_marker(job_dir).exists():
            lock.release()
            return None
        lines = line_count(job_dir)
        if not isinstance(record.get("spec"), dict):
            finish(job_dir, record, "failed", "this job cannot be resumed: its record holds no job spec "
                   f"(written by hand or by an older stimserver); {_run_again(ref)}")
            lock.release()
            return None
        interruptions = int(record.get("interruptions") or 0) + (record["status"] == "running")
        if interruptions > MAX_INTERRUPTIONS:
            finish(job_dir, {**record, "interruptions": interruptions}, "failed",
                   f"the job's runner died {interruptions} times while running it (last at line {lines} of "
                   f"{record.get('expected_lines')}); see the runner's log, then {_run_again(ref)}")
            lock.release()
            return None
        attempt = int(record.get("attempt") or 0) + 1
        record = {**record, "status": "running", "attempt": attempt, "interruptions": interruptions,
                  "started_at": record.get("started_at") or now_iso(),
                  "resumed_at": now_iso() if attempt > 1 else None, "resumed_from_line": lines if attempt > 1 else None,
                  "worker": worker, "orphaned_at": None}
        write_record(job_dir, record)
        return lock, record
    except BaseException:
        lock.release()
        raise


def requeue_orphan(paths: DataPaths, ref: JobRef) -> bool:
    """A ``running`` job without a writer becomes ``pending`` (counted as an interruption)."""
    job_dir = ref.job_dir(paths)
    lock = _job_lock(job_dir)
    if lock is None:
        return False
    with lock:
        record = read_record(job_dir)
        if record is None or record.get("status") != "running":
            return False
        write_record(job_dir, {**record, "status": "pending", "worker": None,
                               "interruptions": int(record.get("interruptions") or 0) + 1})
        return True


def _run_again(ref: JobRef) -> str:
    return f"POST /v1/repo/{ref.repo}/targets/{ref.target}/{ref.kind} to run it again"


def _epoch(iso: str) -> float:
    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))


def observe_orphan(paths: DataPaths, ref: JobRef, orphan_seconds: float) -> dict[str, Any] | None:
    """For a status read of an active job: what to report if nobody runs it.

    Returns None when a writer holds the job or some runner is alive (it will claim the
    job within its scan interval). Otherwise the job is an orphan: the first read marks
    it ``pending`` with ``orphaned_at``; a read ``orphan_seconds`` later marks it failed.
    """
    job_dir = ref.job_dir(paths)
    lock = _job_lock(job_dir)
    if lock is None:
        return None
    with lock:
        record = read_record(job_dir)
        if record is None or record.get("status") not in ACTIVE:
            return record
        if live_runners(paths) > 0:
            return None
        now = time.time()
        if record.get("orphaned_at") is None:
            record = {**record, "status": "pending", "worker": None, "orphaned_at": now_iso(),
                      "interruptions": int(record.get("interruptions") or 0) + (record["status"] == "running")}
            if orphan_seconds > 0:
                write_record(job_dir, record)
                return record
        if now - _epoch(record["orphaned_at"]) >= orphan_seconds:
            lines = line_count(job_dir)
            record = finish(job_dir, record, "failed",
                            f"no job runner took this job up within {orphan_seconds:g} s (it stopped at line "
                            f"{lines} of {record.get('expected_lines')}): start `stimserver serve` with jobs "
                            f"enabled or `stimserver worker` on this data directory, then {_run_again(ref)}")
        return record


def stop_job(paths: DataPaths, ref: JobRef, timeout: float) -> bool:
    """Stop the job wherever it runs and wait for its writer to let go; False on timeout.

    Only a pending or running job is stopped: a stop marker asks its writer in another
    process to stop (writers look for it at least twice a second), and once the lock is
    ours the record is marked failed so that nobody resumes it. A lock held for anything
    else (an import) is not waited for.
    """
    job_dir = ref.job_dir(paths)
    record = read_record(job_dir)
    if record is None or record.get("status") not in ACTIVE:
        return True
    marker = stop_marker(job_dir)
    try:
        marker.touch()
    except FileNotFoundError:
        return True  # the target is gone
    try:
        deadline = time.monotonic() + timeout
        while True:
            lock = _job_lock(job_dir)
            if lock is not None:
                with lock:
                    record = read_record(job_dir)
                    if record is not None and record.get("status") in ACTIVE:
                        finish(job_dir, record, "failed", f"stopped: the {ref.kind} job was stopped "
                               f"(e.g. its target was deleted) at line {line_count(job_dir)}")
                return True
            if not job_dir.parent.is_dir():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
    finally:
        marker.unlink(missing_ok=True)


class ScanCache:
    """(status, job_id) of each job record, re-read only when the file changed."""

    def __init__(self) -> None:
        self._items: dict[Path, tuple[tuple[int, int, int], str | None, int]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> tuple[str | None, int]:
        try:
            st = os.stat(path)
        except OSError:
            return None, 0
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._items.get(path)
        if hit is not None and hit[0] == ident:
            return hit[1], hit[2]
        record = read_record(path.parent) or {}
        status, job_id = record.get("status"), int(record.get("job_id") or 0)
        with self._lock:
            self._items[path] = (ident, status, job_id)
        return status, job_id

    def keep_only(self, seen: set[Path]) -> None:
        with self._lock:
            for path in [p for p in self._items if p not in seen]:
                del self._items[path]


def find_active(paths: DataPaths, kinds: tuple[str, ...], cache: ScanCache | None = None) -> list[tuple[JobRef, str]]:
    """Every job record whose status is pending or running, oldest job first."""
    cache = cache or ScanCache()
    found = []
    seen: set[Path] = set()
    for kind in kinds:
        for path in paths.users.glob(f"*/repos/*/targets/*/{kind}/job.json"):
            seen.add(path)
            status, job_id = cache.get(path)
            if status not in ACTIVE:
                continue
            parts = path.relative_to(paths.users).parts  # user, repos, repo, targets, target, kind, job.json
            found.append((job_id, JobRef(parts[0], parts[2], parts[4], kind), status))
    cache.keep_only(seen)
    found.sort(key=lambda item: item[0])
    return [(ref, status) for _, ref, status in found]


# -- runner presence ---------------------------------------------------------------------

def _runners_dir(paths: DataPaths) -> Path:
    return paths.root / "runners"


class Presence:
    """This runner's flock in ``DATA/runners/``, held while the runner lives."""

    def __init__(self, paths: DataPaths, runner_id: str) -> None:
        self.path = _runners_dir(paths) / f"{socket.gethostname()}-{os.getpid()}-{runner_id}.lock"
        self._fd: int | None = None

    def register(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else a sweep removed the file between open and flock: make a new one
                self._fd = fd
                return
            os.close(fd)

    def unregister(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def live_runners(paths: DataPaths) -> int:
    """How many runners hold their presence lock; removes the files of dead ones."""
    folder = _runners_dir(paths)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    alive = 0
    for name in names:
        if not name.endswith(".lock"):
            continue
        path = folder / name
        try:
            with try_lock(path) as lock:
                if lock is None:
                    alive += 1
                else:
                    path.unlink(missing_ok=True)
        except FileNotFoundError:
            continue
    return alive
