"""A job's files beside its target's record, and the job-status vocabulary. Blocking.

Files of one job (``kind`` is ``stim`` or ``rollout``)::

    targets/<t>/<kind>/job.json           the record (status, config, spec, counters)
    targets/<t>/<kind>/output.jsonl       committed lines + output.idx (store.output)
    targets/<t>/<kind>/<checkpoint>.json  e.g. questions-0.json, written before its lines
    targets/<t>/<kind>.lock               flock held by the one process writing the job
    targets/<t>/.<kind>.submit.lock       serialises submissions of a new job
    targets/<t>/.<kind>.stop              asks the job's writer, wherever it runs, to stop
    targets/<t>/.<kind>.prepare/          files a new job reads (a rollout's frozen stimuli), written
                                          at submit and moved into the job's folder with its record
    DATA/.jobseq                          the last job id handed out (flock + fsync)

This module knows the files and their format; what a status change means (claim,
resume, orphan) is decided by ``stimserver.jobs``.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from .atomic import fsync_dir, is_no_space, no_space, read_replaced, write_json_atomic
from .locks import FileLock
from .output import INDEX_NAME, lock_path
from .paths import BAKE_KIND, JOB_KINDS, DataPaths

__all__ = ["JobStatus", "ACTIVE", "JobRef", "JOB_FILE", "job_file", "read_record", "write_record", "stop_marker",
           "submit_lock", "try_job_lock", "wait_job_lock", "reset_output", "next_job_id", "job_files", "fresh_staging",
           "remove_staging", "move_in"]

JOB_FILE = "job.json"


class JobStatus(StrEnum):
    """Every status a job can report; ``not_started`` only in the API (no record exists)."""

    NOT_STARTED = "not_started"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


# Statuses a record can hold while some runner still has work to do on it.
ACTIVE = frozenset({JobStatus.PENDING, JobStatus.RUNNING})


@dataclass(frozen=True)
class JobRef:
    """Names one job: whose, which repo and target, which kind."""

    user: str
    repo: str
    target: str
    kind: str

    def job_dir(self, paths: DataPaths) -> Path:
        return paths.job_dir(self.user, self.repo, self.target, self.kind)

    def __str__(self) -> str:
        return f"{self.user}/{self.repo}/{self.target}/{self.kind}"


def job_file(job_dir: Path) -> Path:
    return job_dir / JOB_FILE


def stop_marker(job_dir: Path) -> Path:
    return job_dir.parent / f".{job_dir.name}.stop"


def submit_lock(job_dir: Path) -> Path:
    return job_dir.parent / f".{job_dir.name}.submit.lock"


def read_record(job_dir: Path) -> dict[str, Any] | None:
    """The record as it is on disk now (uncached: transitions must see the latest)."""
    try:
        value = orjson.loads(read_replaced(job_file(job_dir)))
    except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_record(job_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(job_file(job_dir), record)


def try_job_lock(job_dir: Path) -> FileLock | None:
    """The job's lock if free; None if taken or the target is gone (never recreates it)."""
    if not job_dir.parent.is_dir():
        return None
    return FileLock.acquire(lock_path(job_dir), blocking=False)


def wait_job_lock(job_dir: Path, seconds: float) -> FileLock | None:
    deadline = time.monotonic() + seconds
    while True:
        lock = try_job_lock(job_dir)
        if lock is not None or time.monotonic() >= deadline:
            return lock
        time.sleep(0.05)


def reset_output(job_dir: Path) -> None:
    """Remove a previous attempt's output and checkpoints (everything but job.json)."""
    if not job_dir.is_dir():
        return
    for name in sorted(os.listdir(job_dir), key=lambda n: n != INDEX_NAME):  # index first
        path = job_dir / name
        if name != JOB_FILE and path.is_file():
            path.unlink()
    fsync_dir(job_dir)


def fresh_staging(job_dir: Path) -> Path:
    """An empty ``.<kind>.prepare`` folder beside the job's (one a dead submit left is emptied)."""
    staging = job_dir.parent / f".{job_dir.name}.prepare"
    remove_staging(staging)
    staging.mkdir()
    return staging


def remove_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def move_in(staging: Path, job_dir: Path) -> None:
    """Move every file of ``staging`` into ``job_dir`` (same file system: renames), then sync the folder."""
    names = sorted(os.listdir(staging))
    for name in names:
        os.replace(staging / name, job_dir / name)
    if names:
        fsync_dir(job_dir)


def next_job_id(paths: DataPaths) -> int:
    """A job id unique across every process sharing this data directory."""
    path = paths.job_seq
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 32, 0).strip()
        value = int(raw) + 1 if raw.isdigit() else 1
        text = f"{value}\n".encode()
        try:
            # Overwrite in place, then cut: a failed write leaves the old number (never an
            # empty file, which would hand out job 1 again).
            os.pwrite(fd, text, 0)
            os.ftruncate(fd, len(text))
            os.fsync(fd)
        except OSError as e:
            if is_no_space(e):
                raise no_space("the job counter") from e
            raise
        return value
    finally:
        os.close(fd)


def job_files(paths: DataPaths, kinds: tuple[str, ...] = JOB_KINDS) -> Iterator[tuple[JobRef, Path]]:
    """Every job record of the data directory: the one glob (runner scans, metrics)."""
    for kind in kinds:
        owners = "bakes" if kind == BAKE_KIND else "targets"
        for path in paths.users.glob(f"*/repos/*/{owners}/*/{kind}/{JOB_FILE}"):
            parts = path.relative_to(paths.users).parts  # user, repos, repo, targets, target, kind, job.json
            yield JobRef(parts[0], parts[2], parts[4], kind), path
