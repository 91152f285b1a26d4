"""Open output files of complete jobs, kept between page reads (the paging fast path).

A complete job's output no longer grows, so re-opening ``output.jsonl`` and ``output.idx``
and re-checking that they agree on every page (two opens, fstats and closes) is work
that need not be repeated. ``OpenOutputs`` keeps, for a bounded number of job folders,
both descriptors and the committed length, as long as:

- the job record is the very file it was when the entry was made (its identity —
  inode, size, mtime — is the key: a re-run, a stop or any rewrite of ``job.json``
  makes a new one, and a deleted target has no record at all, so the caller never asks);
- the two files keep the sizes and the link they had (one ``fstat`` each, no path walk):
  a crash repair truncates in place and a reset unlinks, and either drops the entry.
  With a ``changes.ChangeBoard`` the ``fstat``s are skipped while the board says the
  store changed nothing since the last check and that check is under a second old.

Anything unexpected answers None and the caller reads the page the ordinary way
(``output.read_page_async``, which repairs), so this path never serves a byte the ordinary
one would not. Memory is fixed: ``size`` entries of two descriptors and four integers;
pages are read from the page cache and never kept. Entries whose files were unlinked
(a deleted target, wherever it was deleted) are closed within ``SWEEP_SECONDS`` of the
next page read, so they do not keep the disk space of deleted outputs.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from . import lineindex, output
from .cache import Identity
from .changes import RECHECK_SECONDS, ChangeBoard

__all__ = ["OpenOutputs", "Lines"]

SWEEP_SECONDS = 1.0  # how often entries whose files were deleted (a trashed target) are closed


class Lines:
    """A page's stored lines joined by commas (``items``: no brackets), ready to be framed.

    A plain slotted class, not a frozen dataclass: one is made per page, and a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__`` (issue 13)."""

    __slots__ = ("items", "count", "total")

    def __init__(self, items: memoryview, count: int, total: int) -> None:
        self.items = items
        self.count = count
        self.total = total


@dataclass
class _Open:
    version: Identity
    data_fd: int
    idx_fd: int
    data_size: int
    idx_size: int
    total: int
    word: int | None = None  # the change board's word read before the files' last check
    checked: float = 0.0  # monotonic time of that check

    def close(self) -> None:
        for fd in (self.data_fd, self.idx_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _unchanged(fd: int, size: int) -> bool:
    st = os.fstat(fd)
    return st.st_size == size and st.st_nlink > 0


def _span(idx_fd: int, start: int, stop: int) -> tuple[int, int]:
    """``lineindex.read_span`` in one ``pread`` (the entries before and at the page's end are adjacent)."""
    if start == 0:
        return 0, lineindex.read_entry(idx_fd, stop - 1)
    want = (stop - start + 1) * lineindex.ENTRY_SIZE
    raw = os.pread(idx_fd, want, (start - 1) * lineindex.ENTRY_SIZE)
    if len(raw) != want:
        raise EOFError("the index is shorter than it was")
    size = lineindex.ENTRY_SIZE
    return int.from_bytes(raw[:size], "little"), int.from_bytes(raw[-size:], "little")


def _open(job_dir: Path, version: Identity) -> _Open | None:
    """Both files of a complete job's output, if they exist and agree; else None."""
    try:
        pair = output.open_pair(job_dir)
    except OSError:
        return None
    if pair is None:
        return None
    data_fd, idx_fd = pair
    entry = _Open(version, data_fd, idx_fd, os.fstat(data_fd).st_size, os.fstat(idx_fd).st_size, 0)
    try:
        entry.total = entry.idx_size // lineindex.ENTRY_SIZE
        agree = (entry.idx_size % lineindex.ENTRY_SIZE == 0
                 and lineindex.read_entry(idx_fd, entry.total - 1) == entry.data_size)
    except (OSError, EOFError):
        agree = False
    if not agree:
        entry.close()
        return None
    return entry


class OpenOutputs:
    """A fixed-size LRU of open complete outputs by job folder; see the module doc."""

    def __init__(self, size: int = 32, board: ChangeBoard | None = None) -> None:
        self.size = size
        self.board = board
        self._items: OrderedDict[Path, _Open] = OrderedDict()
        self._lock = threading.Lock()  # pages are read on the loop; the lock only guards odd callers
        self._swept = time.monotonic()

    def __len__(self) -> int:
        return len(self._items)

    def lines(self, job_dir: Path, version: Identity, offset: int, limit: int) -> Lines | None:
        """Lines ``[offset, offset+limit)`` of the complete output in ``job_dir``; None: read it the usual way.

        ``version`` is the identity of the ``job.json`` that says the job is complete.
        Pages over ``output.INLINE_READ_BYTES`` answer None too: those are read off the loop.
        """
        word = None if self.board is None else self.board.word()
        with self._lock:
            now = time.monotonic()
            if now - self._swept >= SWEEP_SECONDS:
                self._sweep()
            entry = self._items.get(job_dir)
            if entry is not None and entry.version != version:
                self._drop(job_dir)
                entry = None
            if entry is None:
                entry = _open(job_dir, version)
                if entry is None:
                    return None
                entry.word, entry.checked = word, now
                self._items[job_dir] = entry
                while len(self._items) > self.size:
                    self._items.popitem(last=False)[1].close()
            else:
                self._items.move_to_end(job_dir)
            try:
                if word is None or entry.word != word or now - entry.checked >= RECHECK_SECONDS:
                    if not (_unchanged(entry.idx_fd, entry.idx_size) and _unchanged(entry.data_fd, entry.data_size)):
                        raise EOFError("the output changed under a complete job")  # repaired or reset: look again
                    entry.word, entry.checked = word, now
                return self._read(entry, offset, limit)
            except (OSError, EOFError):
                self._drop(job_dir)
                return None

    def _read(self, entry: _Open, offset: int, limit: int) -> Lines | None:
        total = entry.total
        stop = min(offset + limit, total)
        if stop <= offset:
            return Lines(memoryview(b""), 0, total)
        begin, end = _span(entry.idx_fd, offset, stop)
        if end - begin > output.INLINE_READ_BYTES:  # read at call time: one setting for both paths
            return None
        raw = os.pread(entry.data_fd, end - begin, begin)
        if len(raw) != end - begin or not raw.endswith(b"\n"):
            raise EOFError("short read of a complete output")
        return Lines(memoryview(raw.replace(b"\n", b","))[:-1], stop - offset, total)

    def _sweep(self) -> None:
        self._swept = time.monotonic()
        for job_dir, entry in list(self._items.items()):
            try:
                gone = os.fstat(entry.data_fd).st_nlink == 0 or os.fstat(entry.idx_fd).st_nlink == 0
            except OSError:
                gone = True
            if gone:
                self._drop(job_dir)

    def _drop(self, job_dir: Path) -> None:
        entry = self._items.pop(job_dir, None)
        if entry is not None:
            entry.close()

    def forget(self, job_dir: Path) -> None:
        """Close the entry of ``job_dir`` (this process changed or removed it)."""
        with self._lock:
            self._drop(job_dir)

    def close(self) -> None:
        with self._lock:
            while self._items:
                self._items.popitem()[1].close()
