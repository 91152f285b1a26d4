"""A job's output: ``output.jsonl`` (the truth) + ``output.idx`` (see lineindex); the read side.

The writer (``OutputWriter``, in ``store.writer``, re-exported here) makes lines durable
before indexing them, so the number of index entries is the committed line count that
readers see; a line a page has served is on disk, and ``recover`` rebuilds exactly the
same bytes after a crash. Reads write nothing themselves: damage with no live writer gets
one quiet, lock-holding repair try (with a backoff when it fails), and otherwise the
committed lines are served as they are.

``read_page_async`` (the event loop's reader) and ``read_page`` serve lines
``[offset, offset+limit)`` with two 8-byte index reads and one data read, whatever the
offset and the file size. The lines on disk are
compact JSON objects, so the page's JSON array is spliced from the raw bytes
(newlines become commas) instead of being parsed and re-serialised.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import aiofiles.os

from . import lineindex
from .locks import try_lock
from .writer import DATA_NAME, INDEX_NAME, OutputWriter, encode, lock_path, repair

log = logging.getLogger("stimserver.output")

__all__ = ["OutputWriter", "Page", "read_page", "read_page_async", "splice", "encode", "line_count", "repair",
           "DATA_NAME", "INDEX_NAME", "INLINE_READ_BYTES", "lock_path"]

# Pages larger than this are read in a worker thread so that one big read never stalls
# the event loop; smaller ones are a direct pread, cheaper than the thread hop (see
# scripts/bench/bench_pageread.py for the measurement behind the number).
INLINE_READ_BYTES = 1 << 20


@dataclass
class Page:
    body: bytes | None  # a JSON array of the page's lines; None when left to the caller
    count: int          # lines in the page
    total: int          # committed lines in the output
    span: tuple[int, int] = (0, 0)  # the page's byte range in output.jsonl
    needs_repair: bool = False  # read with repair=False and the files disagree: read again with it


EMPTY = Page(b"[]", 0, 0)


def splice(raw: bytes) -> bytes:
    """Complete stored lines → one JSON array, without parsing them."""
    if not raw:
        return b"[]"
    commas = raw.replace(b"\n", b",")  # the last newline becomes the "]"
    return b"".join((b"[", memoryview(commas)[:-1], b"]"))


def open_pair(job_dir: Path, data_name: str = DATA_NAME, index_name: str = INDEX_NAME) -> tuple[int, int] | None:
    """(data fd, index fd) of a job's output opened for reading; None if either file is missing.

    Other names open another data + index pair of the same format (a rollout's frozen stimuli).
    """
    try:
        idx_fd = os.open(job_dir / index_name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        data_fd = os.open(job_dir / data_name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(idx_fd)
        return None
    return data_fd, idx_fd


def _consistent(data_fd: int, idx_fd: int) -> tuple[bool, int]:
    """(index agrees with the data's end, committed lines); O(1)."""
    idx_size = os.fstat(idx_fd).st_size
    n = idx_size // lineindex.ENTRY_SIZE
    data_size = os.fstat(data_fd).st_size
    last = lineindex.read_entry(idx_fd, n - 1)
    return (idx_size % lineindex.ENTRY_SIZE == 0 and last == data_size), n


def _needs_files(job_dir: Path) -> bool:
    return (job_dir / DATA_NAME).exists() or (job_dir / INDEX_NAME).exists()


# A repair that failed (a full disk, say) is not tried again for this long: reads keep
# serving the committed lines meanwhile instead of each retrying a write that cannot work.
REPAIR_BACKOFF_SECONDS = 10.0
_failed_repairs: dict[Path, float] = {}


def _repair_if_idle(job_dir: Path) -> bool:
    """Repair unless a live writer holds the job lock; True if it repaired.

    Fails quietly: a repair that cannot write (full disk, read-only mount) is logged once
    per backoff and the reader serves the committed lines as they are.
    """
    failed_at = _failed_repairs.get(job_dir)
    if failed_at is not None and time.monotonic() - failed_at < REPAIR_BACKOFF_SECONDS:
        return False
    try:
        repaired = _repair_unlocked(job_dir)
    except FileNotFoundError:
        return False  # the target was removed meanwhile: nothing left to repair
    except OSError as e:
        if len(_failed_repairs) > 1024:
            _failed_repairs.clear()
        _failed_repairs[job_dir] = time.monotonic()
        log.warning("could not repair the output of %s (%s); serving its committed lines as they are",
                    job_dir, e.strerror or e)
        return False
    _failed_repairs.pop(job_dir, None)
    return repaired


def _whole_lines(data_fd: int, raw: bytes, begin: int) -> bool:
    """The bytes start just after a newline (or at 0) and end with one: whole lines."""
    return bool(raw) and raw.endswith(b"\n") and (begin == 0 or os.pread(data_fd, 1, begin - 1) == b"\n")


def _lines_within(idx_fd: int, n: int, data_size: int) -> int:
    """How many of the first ``n`` (increasing) index entries end within the data: a binary search."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if lineindex.read_entry(idx_fd, mid - 1) <= data_size:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _repair_unlocked(job_dir: Path) -> bool:
    with try_lock(lock_path(job_dir)) as lock:
        if lock is None:
            return False
        pair = open_pair(job_dir)
        if pair is not None:
            ok, _ = _consistent(*pair)
            os.close(pair[0])
            os.close(pair[1])
            if ok:
                return False
        repair(job_dir)
        return True


@dataclass
class _Deferred:
    """A page too large to read on the event loop: the open data file and the bytes to read."""

    data_fd: int
    span: tuple[int, int]
    count: int
    total: int

    def read(self) -> Page:
        """Read the span and close the file (in a worker thread)."""
        begin, end = self.span
        try:
            raw = os.pread(self.data_fd, end - begin, begin)
        finally:
            os.close(self.data_fd)
        return Page(splice(raw), self.count, self.total, self.span)


def _locate(job_dir: Path, offset: int, limit: int, max_inline: int | None, repair: bool) -> Page | _Deferred:
    """The page, or (over ``max_inline`` bytes) where it is, with its data file left open."""
    for attempt in (0, 1):
        pair = open_pair(job_dir)
        if pair is None:
            if attempt == 0 and _needs_files(job_dir):
                if not repair:
                    return Page(b"[]", 0, 0, needs_repair=True)
                if _repair_if_idle(job_dir):
                    continue
            return EMPTY
        data_fd, idx_fd = pair
        keep_data = False
        try:
            ok, total = _consistent(data_fd, idx_fd)
            damaged = flagged = False
            if not ok:
                data_size = os.fstat(data_fd).st_size
                behind = lineindex.read_entry(idx_fd, total - 1) <= data_size
                damaged = not behind or os.fstat(idx_fd).st_size % lineindex.ENTRY_SIZE != 0
                # A live writer's data runs ahead of its index between its two appends:
                # that is normal. Anything else is damage, repaired here if nobody writes.
                if attempt == 0:
                    if not repair:
                        if damaged:
                            return Page(b"[]", 0, total, needs_repair=True)
                        flagged = True  # the committed lines are served as they are, flagged
                    elif _repair_if_idle(job_dir):
                        continue
                if not behind:  # damage nobody could repair now: serve the lines the data still holds
                    total = _lines_within(idx_fd, total, data_size)
            if offset >= total:
                return Page(b"[]", 0, total, needs_repair=flagged)
            stop = min(offset + limit, total)
            begin, end = lineindex.read_span(idx_fd, offset, stop)
            if max_inline is not None and end - begin > max_inline:
                keep_data = True
                return _Deferred(data_fd, (begin, end), stop - offset, total)
            raw = os.pread(data_fd, end - begin, begin)
            if damaged and not _whole_lines(data_fd, raw, begin):
                return Page(b"[]", 0, total)  # a damaged index points mid-line: serve nothing wrong
        except EOFError:
            continue  # the index was cut under us (a repair elsewhere): look again
        finally:
            if not keep_data:
                os.close(data_fd)
            os.close(idx_fd)
        return Page(splice(raw), stop - offset, total, (begin, end), needs_repair=flagged)
    return EMPTY


def read_page(job_dir: Path, offset: int, limit: int, max_inline: int | None = None, *,
              repair: bool = True) -> Page:
    """Lines ``[offset, offset+limit)`` of the committed output as a JSON array. Blocking.

    A page over ``max_inline`` bytes is not read: ``body`` is None and ``span`` says
    which bytes it would be. Files that disagree are repaired first when no writer is
    alive (quietly: a repair that cannot write serves the committed lines as they are);
    with ``repair=False`` nothing is written and ``needs_repair`` comes back, with the
    committed lines when the index itself is sound (data ahead of it, as after a kill).
    On the event loop use ``read_page_async``, which makes both choices.
    """
    found = _locate(job_dir, offset, limit, max_inline, repair)
    if isinstance(found, _Deferred):
        os.close(found.data_fd)
        return Page(None, found.count, found.total, found.span)
    return found


async def _read_off_loop(deferred: _Deferred) -> Page:
    """A large page's bytes, read on the descriptor already open, in aiofiles' executor thread."""
    page: Page = await aiofiles.os.wrap(deferred.read)()
    return page


async def read_page_async(job_dir: Path, offset: int, limit: int, max_inline: int | None = None) -> Page:
    """``read_page`` for the event loop: inline ``pread`` for ordinary pages, a thread otherwise.

    For pages up to ``max_inline`` bytes a direct ``pread`` from the page cache is cheaper
    than a hop to a thread (scripts/bench/bench_pageread.py measures it), so the common page
    costs one index pair read and one data read on the loop. Larger pages are read in a
    worker thread from the file already opened (no second open, no race with a reset), and
    a repair — which scans the data — also runs in a thread, so one request never stalls
    the others.
    """
    found = _locate(job_dir, offset, limit, INLINE_READ_BYTES if max_inline is None else max_inline, False)
    if isinstance(found, Page) and found.needs_repair:  # rare (after a crash)
        # Already off the loop there, so the page is read in the same thread, whatever its size.
        found = await asyncio.to_thread(_locate, job_dir, offset, limit, None, True)
    if isinstance(found, _Deferred):
        page: Page = await _read_off_loop(found)
        return page
    return found


def line_count(job_dir: Path) -> int:
    """Committed lines, as readers see them."""
    pair = open_pair(job_dir)
    if pair is None:
        return 0
    try:
        return lineindex.count_entries(pair[1])
    finally:
        os.close(pair[0])
        os.close(pair[1])
