"""Finding work: every job record whose status says some runner should be running it."""
from __future__ import annotations

from pathlib import Path

from ..store.cache import FileCache
from ..store.jobrecords import ACTIVE, JobRef, JobStatus, job_files
from ..store.paths import DataPaths

__all__ = ["find_active", "scan_cache"]


def scan_cache() -> FileCache:
    """A cache for ``find_active`` big enough that a scan of many jobs re-reads only changes."""
    return FileCache(size=1 << 16)


def find_active(paths: DataPaths, kinds: tuple[str, ...], cache: FileCache | None = None
                ) -> list[tuple[JobRef, JobStatus]]:
    """Every job record whose status is pending or running, oldest job first. Blocking."""
    cache = scan_cache() if cache is None else cache
    found: list[tuple[int, JobRef, JobStatus]] = []
    seen: set[Path] = set()
    for ref, path in job_files(paths, kinds):
        seen.add(path)
        record = cache.read(path) or {}
        status = record.get("status")
        if status not in ACTIVE:
            continue
        job_id = record.get("job_id")
        found.append((job_id if isinstance(job_id, int) else 0, ref, JobStatus(status)))
    cache.keep_only(seen)
    found.sort(key=lambda item: item[0])
    return [(ref, status) for _, ref, status in found]
