"""JSON records of repos, prompts, targets and jobs.

Each record is one small JSON file, written with ``atomic.write_json_atomic`` (or
``create_json_exclusive`` when two creators may race). Reads go through a cache
keyed by the file's identity (inode, size, mtime), so the hot paging path re-reads
``job.json`` only when it has changed — also when another process changed it.
"""
from __future__ import annotations

import fcntl
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

from .atomic import create_json_exclusive, write_json_atomic
from .paths import DataPaths

__all__ = ["RecordCache", "Records", "now_iso"]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RecordCache:
    """A small LRU of parsed JSON files, validated by ``stat`` on every read."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[Path, tuple[tuple[int, int, int], Any]] = OrderedDict()

    def read(self, path: Path) -> Any | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._items.pop(path, None)
            return None
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._items.get(path)
        if hit is not None and hit[0] == ident:
            self._items.move_to_end(path)
            return hit[1]
        try:
            with open(path, "rb") as f:
                value = orjson.loads(f.read())
        except FileNotFoundError:
            return None
        self._items[path] = (ident, value)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value

    def forget(self, path: Path) -> None:
        self._items.pop(path, None)


class Records:
    """Typed access to the records under one data directory."""

    def __init__(self, paths: DataPaths, cache: RecordCache | None = None) -> None:
        self.paths = paths
        self.cache = cache or RecordCache()

    # -- reads ---------------------------------------------------------------------
    def repo(self, user: str, repo: str) -> dict | None:
        return self.cache.read(self.paths.repo(user, repo) / "repo.json")

    def target(self, user: str, repo: str, target: str) -> dict | None:
        return self.cache.read(self.paths.target(user, repo, target) / "target.json")

    def job(self, user: str, repo: str, target: str, kind: str) -> dict | None:
        return self.cache.read(self.paths.job_dir(user, repo, target, kind) / "job.json")

    # -- writes --------------------------------------------------------------------
    def create(self, path: Path, record: dict) -> bool:
        """Create a record unless one exists; True if this call created it."""
        return create_json_exclusive(path, record)

    def write(self, path: Path, record: dict) -> None:
        write_json_atomic(path, record)
        self.cache.forget(path)

    def write_job(self, user: str, repo: str, target: str, kind: str, record: dict) -> None:
        self.write(self.paths.job_dir(user, repo, target, kind) / "job.json", record)

    def next_job_id(self) -> int:
        """A job id unique across every process sharing this data directory."""
        path = self.paths.job_seq
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 32, 0).strip()
            value = int(raw) + 1 if raw.isdigit() else 1
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{value}\n".encode(), 0)
            os.fsync(fd)
            return value
        finally:
            os.close(fd)
