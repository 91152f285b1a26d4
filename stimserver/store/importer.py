"""Turn an existing JSONL file into a target's completed stim output.

The file is validated and written into a hidden sibling folder first; only when
every line is a JSON object does that folder replace the target's job folder, and
only then are missing repo and target records created. A bad line stops the import
with its line number and leaves the data directory as it was.
"""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .atomic import fsync_dir
from .jobrecords import JobStatus
from .lineindex import InvalidLine, parse_line
from .locks import FileLock
from .output import OutputWriter, lock_path
from .records import Records, now_iso

__all__ = ["import_jsonl", "ImportRefused"]

_BATCH = 20_000


class ImportRefused(ValueError):
    """The file cannot be imported; nothing was written."""


def import_jsonl(records: Records, user: str, repo: str, target: str, src: Path, *, default_config: dict[str, Any],
                 base_model: str, kind: str = "stim", on_progress: Callable[[int], None] | None = None) -> int:
    """Import ``src``; returns the number of lines. ``on_progress`` gets bytes read.

    ``default_config`` and ``base_model`` fill the target and repo records the import
    creates when they are missing; the caller knows them (the store knows no target rules).
    """
    paths = records.paths
    job_dir = paths.job_dir(user, repo, target, kind)  # validates every name first
    target_dir = job_dir.parent
    created = _first_missing(target_dir, paths.root)
    target_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock.acquire(lock_path(job_dir), blocking=False)
    if lock is None:
        raise ImportRefused(f"a {kind} job of target '{target}' is running; stop it first")
    staging = target_dir / f".{kind}.import-{secrets.token_hex(4)}"
    done = False
    try:
        lines = _write_staging(src, staging, on_progress)
        job_id = records.next_job_id()
        config = _target_config(records, user, repo, target, default_config)
        records.write(staging / "job.json", {
            "job_id": job_id, "kind": kind, "status": JobStatus.COMPLETE.value, "config": config,
            "expected_lines": lines, "error": None, "source": f"import:{src.name}",
            "created_at": now_iso(), "finished_at": now_iso(),
        })
        _ensure_records(records, user, repo, target, default_config, base_model)
        _swap_in(staging, job_dir)
        records.cache.forget(job_dir / "job.json")
        done = True
        return lines
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        lock.release()
        if not done and created is not None:
            shutil.rmtree(created, ignore_errors=True)  # leave no folder this import made


def _first_missing(path: Path, root: Path) -> Path | None:
    """The outermost folder between ``root`` and ``path`` that does not exist yet."""
    missing = None
    while path != root and not path.exists():
        missing = path
        path = path.parent
    return missing


def _write_staging(src: Path, staging: Path, on_progress: Callable[[int], None] | None) -> int:
    staging.mkdir()
    stage_lock = FileLock.acquire(lock_path(staging), blocking=False)
    assert stage_lock is not None
    try:
        with open(src, "rb") as f, OutputWriter.open(staging, stage_lock) as writer:
            batch: list[bytes] = []
            for number, line in enumerate(f, start=1):
                if on_progress:
                    on_progress(len(line))
                if not line.strip():
                    continue  # blank lines carry no record
                try:
                    value = parse_line(line, number)
                except InvalidLine as e:
                    raise ImportRefused(f"{src}: {e}") from None
                batch.append(orjson.dumps(value))
                if len(batch) >= _BATCH:
                    writer.append(batch)
                    batch = []
            writer.append(batch)
            return writer.lines
    finally:
        stage_lock.release()
        lock_path(staging).unlink(missing_ok=True)


def _target_config(records: Records, user: str, repo: str, target: str,
                   default_config: dict[str, Any]) -> dict[str, Any]:
    existing = records.target(user, repo, target)
    config = existing.get("config") if existing else None
    return config if isinstance(config, dict) else dict(default_config)


def _ensure_records(records: Records, user: str, repo: str, target: str, default_config: dict[str, Any],
                    base_model: str) -> None:
    paths = records.paths
    records.create(paths.repo(user, repo) / "repo.json",
                   {"repo_name": repo, "base_model": base_model, "created_at": now_iso()})
    records.create(paths.target(user, repo, target) / "target.json",
                   {"target_name": target, "template": "default", "config": dict(default_config),
                    "created_at": now_iso()})


def _swap_in(staging: Path, job_dir: Path) -> None:
    old = None
    if job_dir.exists():
        old = job_dir.with_name(f".{job_dir.name}.old-{secrets.token_hex(4)}")
        os.rename(job_dir, old)
    os.rename(staging, job_dir)
    fsync_dir(job_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
