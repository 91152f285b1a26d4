"""JSON records of repos, prompts, targets and jobs.

Each record is one small JSON file, written with ``atomic.write_json_atomic`` (or
``create_json_exclusive`` when two creators may race). Reads go through a cache
keyed by the file's identity (inode, size, mtime), so the hot paging path re-reads
``job.json`` only when it has changed — also when another process changed it. Pages of
complete jobs come from ``opencache.OpenOutputs`` (files kept open, keyed by that record's
identity), so a page costs one ``stat`` of ``job.json`` and no open — and not even that
while ``changes.ChangeBoard`` says nothing changed (on a local file system).

Listings read the folders: a name counts only if it is a valid name and its record
file exists, so temp files and trash a crash left behind never show up. Changes that
must see each other's references (a target naming a prompt, a prompt being deleted)
hold the repo's ``.refs.lock``, an flock shared by every process on the data dir.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from . import output
from .answers import DUPLICATES_FILE, FAILED_FILE, USAGE_FILE
from .atomic import create_json_exclusive, fsync_dir, write_atomic, write_json_atomic
from .cache import FileCache, Identity
from .changes import board_for
from .errors import Busy
from .locks import FileLock
from .opencache import Lines, OpenOutputs
from .output import lock_path
from .paths import TARGET_KINDS, TEMPLATE_DIR, DataPaths, check_name, name_problem, template_file_name

log = logging.getLogger("stimserver.records")

__all__ = ["Records", "now_iso"]

Record = dict[str, Any]

REFS_LOCK = ".refs.lock"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Records:
    """Typed access to the records under one data directory."""

    def __init__(self, paths: DataPaths, cache: FileCache | None = None) -> None:
        self.paths = paths
        board = board_for(paths.root)  # also what lets this process's changes be noticed
        self.cache = FileCache(board=board) if cache is None else cache
        if self.cache.board is None:
            self.cache.board = board
        self.outputs = OpenOutputs(board=board)  # complete jobs' open output files (the paging fast path)

    # -- reads ---------------------------------------------------------------------
    def repo(self, user: str, repo: str) -> Record | None:
        return self.cache.read(self.paths.repo(user, repo) / "repo.json")

    def target(self, user: str, repo: str, target: str) -> Record | None:
        return self.cache.read(self.paths.target(user, repo, target) / "target.json")

    def job(self, user: str, repo: str, target: str, kind: str) -> Record | None:
        """The job record (cached: the paging hot path reads it on every request)."""
        return self.cache.read(self.paths.job_file(user, repo, target, kind))

    def job_versioned(self, user: str, repo: str, target: str, kind: str) -> tuple[Record | None, Identity | None]:
        """``job`` and the identity of the record file it came from (for ``complete_lines``)."""
        return self.cache.read_versioned(self.paths.job_file(user, repo, target, kind))

    # -- a job's output ------------------------------------------------------------
    def job_lines(self, user: str, repo: str, target: str, kind: str) -> int:
        """Committed lines of a job's output (0 when it has none)."""
        return output.line_count(self.paths.job_dir(user, repo, target, kind))

    def job_usage(self, user: str, repo: str, target: str, kind: str) -> Record | None:
        """A job's LLM usage totals (``store.answers``), cached; None when it asked no model."""
        return self.cache.read(self.paths.job_dir(user, repo, target, kind) / USAGE_FILE)

    def job_failed(self, user: str, repo: str, target: str, kind: str) -> list[int]:
        """A rollout's failed request numbers (``store.answers``), cached; [] without any."""
        value = self.cache.read(self.paths.job_dir(user, repo, target, kind) / FAILED_FILE)
        requests = value.get("requests") if isinstance(value, dict) else None
        return [n for n in requests if isinstance(n, int)] if isinstance(requests, list) else []

    def job_duplicates(self, user: str, repo: str, target: str, kind: str) -> tuple[int, list[int]]:
        """A rollout's (compared stimuli, stimuli with identical trajectories), cached; (0, []) without any."""
        value = self.cache.read(self.paths.job_dir(user, repo, target, kind) / DUPLICATES_FILE)
        if not isinstance(value, dict):
            return 0, []
        compared, stimuli = value.get("compared"), value.get("stimuli")
        return (compared if isinstance(compared, int) else 0,
                [n for n in stimuli if isinstance(n, int)] if isinstance(stimuli, list) else [])

    async def job_page(self, user: str, repo: str, target: str, kind: str, offset: int, limit: int) -> output.Page:
        """Lines ``[offset, offset+limit)`` of a job's output (see ``output.read_page_async``)."""
        return await output.read_page_async(self.paths.job_dir(user, repo, target, kind), offset, limit)

    def complete_lines(self, user: str, repo: str, target: str, kind: str, version: Identity,
                       offset: int, limit: int) -> Lines | None:
        """A page of a job whose record (of identity ``version``) says complete, from open files.

        None when that fast path cannot answer (first sight of a damaged output, a large
        page, a change under it): then ``job_page`` reads it, repairing what needs it.
        """
        return self.outputs.lines(self.paths.job_dir(user, repo, target, kind), version, offset, limit)

    # -- writes --------------------------------------------------------------------
    def create(self, path: Path, record: Record) -> bool:
        """Create a record unless one exists; True if this call created it."""
        return create_json_exclusive(path, record)

    def write(self, path: Path, record: Record) -> None:
        write_json_atomic(path, record)
        self.cache.forget(path)

    def write_job(self, user: str, repo: str, target: str, kind: str, record: Record) -> None:
        self.write(self.paths.job_dir(user, repo, target, kind) / "job.json", record)

    def next_job_id(self) -> int:
        """A job id unique across every process sharing this data directory."""
        from .jobrecords import next_job_id  # jobrecords builds on this module's neighbours

        return next_job_id(self.paths)

    # -- listings ------------------------------------------------------------------
    @staticmethod
    def _names(folder: Path, record: str | None, suffix: str = "") -> list[str]:
        """Valid names under ``folder`` whose record exists, sorted (byte order)."""
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for e in entries:
            name = e.name[: -len(suffix)] if suffix and e.name.endswith(suffix) else e.name
            if (suffix and name == e.name) or name_problem(name) is not None:
                continue
            if record is None or os.path.isfile(os.path.join(e.path, record)):
                names.append(name)
        return sorted(names)

    def user_names(self) -> list[str]:
        """Every user with a folder of their own (the viewer's "view as" choices)."""
        return self._names(self.paths.users, None)

    def repo_names(self, user: str) -> list[str]:
        return self._names(self.paths.repos(user), "repo.json")

    def prompt_names(self, user: str, repo: str) -> list[str]:
        return self._names(self.paths.prompts(user, repo), None, ".json")

    def target_names(self, user: str, repo: str) -> list[str]:
        return self._names(self.paths.targets(user, repo), "target.json")

    # -- repos, prompts, targets -------------------------------------------------
    def _create_or_get(self, path: Path, record: Record) -> tuple[Record, bool]:
        """(record, True) if this call created it, else (the existing record, False)."""
        if create_json_exclusive(path, record):
            self.cache.forget(path)
            return record, True
        existing = self.cache.read(path)
        if existing is None:  # deleted between our attempt and the read: try once more
            return self._create_or_get(path, record)
        return existing, False

    def create_repo(self, user: str, repo: str, base_model: str) -> tuple[Record, bool]:
        record = {"repo_name": repo, "base_model": base_model, "created_at": now_iso()}
        return self._create_or_get(self.paths.repo(user, repo) / "repo.json", record)

    def prompt(self, user: str, repo: str, prompt: str) -> Record | None:
        return self.cache.read(self.paths.prompt(user, repo, prompt))

    def create_prompt(self, user: str, repo: str, record: Record) -> tuple[Record, bool]:
        return self._create_or_get(self.paths.prompt(user, repo, record["prompt_name"]), record)

    def write_prompt(self, user: str, repo: str, record: Record) -> None:
        self.write(self.paths.prompt(user, repo, record["prompt_name"]), record)

    def delete_prompt(self, user: str, repo: str, prompt: str) -> bool:
        path = self.paths.prompt(user, repo, prompt)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        self.cache.forget(path)
        return True

    def create_target(self, user: str, repo: str, record: Record) -> tuple[Record, bool]:
        return self._create_or_get(self.paths.target(user, repo, record["target_name"]) / "target.json", record)

    def lock_target_jobs(self, user: str, repo: str, target: str) -> list[FileLock] | None:
        """Every job writer lock of a target, or None (nothing held) if a writer holds one."""
        held: list[FileLock] = []
        for kind in TARGET_KINDS:
            lock = FileLock.acquire(lock_path(self.paths.job_dir(user, repo, target, kind)), blocking=False)
            if lock is None:
                for other in held:
                    other.release()
                return None
            held.append(lock)
        return held

    def trash_target(self, user: str, repo: str, target: str) -> Path:
        """Atomically take a target (record, job folders, locks) out of sight; returns the trash folder.

        The caller holds the target's job locks. The folder is renamed to a hidden
        name in the same directory, so a crash leaves either the target or trash that
        no listing shows and ``purge_trash`` removes.
        """
        folder = self.paths.target(user, repo, target)
        trash = folder.with_name(f".{target}.trash-{secrets.token_hex(4)}")
        os.rename(folder, trash)
        fsync_dir(folder.parent)
        self.cache.forget(folder / "target.json")
        for kind in TARGET_KINDS:
            self.cache.forget(folder / kind / "job.json")
            self.outputs.forget(folder / kind)
        return trash

    def purge_trash(self, user: str, repo: str) -> None:
        """Remove trashed target folders of a repo (blocking; run it off the event loop)."""
        folder = self.paths.targets(user, repo)
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return
        for e in entries:
            if e.name.startswith(".") and ".trash-" in e.name:
                shutil.rmtree(e.path, ignore_errors=True)

    # -- generator templates -------------------------------------------------------
    def template_file(self, user: str, repo: str, template_path: str) -> Path:
        """The file a generator's ``template_path`` (``templates/<file>``) names inside its repo."""
        name = check_name(template_file_name(template_path), "template_path", "body")
        return self.paths.repo(user, repo) / TEMPLATE_DIR / name

    def template(self, user: str, repo: str, template_path: str) -> str | None:
        try:
            return self.template_file(user, repo, template_path).read_text("utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def write_template(self, user: str, repo: str, template_path: str, content: str) -> None:
        write_atomic(self.template_file(user, repo, template_path), content.encode("utf-8"))

    # -- the repo's reference lock -------------------------------------------------
    @asynccontextmanager
    async def references_locked(self, user: str, repo: str, timeout: float = 30.0) -> AsyncIterator[None]:
        """Hold the repo's reference lock, polling so the event loop never blocks on it."""
        path = self.paths.repo(user, repo) / REFS_LOCK
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.001
        while (lock := FileLock.acquire(path, blocking=False)) is None:
            if loop.time() > deadline:
                raise Busy(f"repo '{repo}' is busy with another change; try again")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            lock.release()
