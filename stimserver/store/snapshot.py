"""A committed prefix of a job's output, fixed at one moment: what export, search, samples and stats read.

The index says how many lines are committed and where the last one ends; a reader that
takes ``(lines, size)`` once and reads only ``[0, size)`` of the data sees exactly the
committed lines, whatever a live writer appends meanwhile and whatever torn tail a crash
left behind (the data's bytes past the last index entry are never read). An index that
points past the data is damage, not a live writer: it is repaired (when no writer holds
the job) before the snapshot is taken, as the page reader does.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import lineindex
from .output import DATA_NAME, INDEX_NAME, _repair_if_idle, open_pair

__all__ = ["Snapshot", "take", "CHUNK"]

CHUNK = 1 << 20  # bytes per read when a reader walks the data


@dataclass
class Snapshot:
    """Open descriptors of the data and index plus the committed ``lines`` and ``size``; close it."""

    data_fd: int
    idx_fd: int
    lines: int
    size: int

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """Byte range of lines ``[start, stop)`` (clamped to the committed lines)."""
        start = max(0, min(start, self.lines))
        stop = max(start, min(stop, self.lines))
        return lineindex.read_span(self.idx_fd, start, stop)

    def line(self, i: int) -> bytes:
        """Line ``i`` without its newline."""
        begin, end = self.span(i, i + 1)
        return os.pread(self.data_fd, end - begin - 1, begin)

    def chunks(self, begin: int, end: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """The data bytes ``[begin, end)`` in reads of at most ``chunk`` bytes."""
        pos = begin
        while pos < end:
            raw = os.pread(self.data_fd, min(chunk, end - pos), pos)
            if not raw:
                raise EOFError("the output was cut while it was read")
            pos += len(raw)
            yield raw

    def file(self) -> BinaryIO:
        """The data as a file object on the same descriptor (for ``loop.sendfile``); closing it leaves
        the snapshot open."""
        return open(self.data_fd, "rb", closefd=False)

    def close(self) -> None:
        for fd in (self.data_fd, self.idx_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(job_dir: Path) -> Snapshot | None:
    pair = open_pair(job_dir)
    if pair is None:
        return None
    data_fd, idx_fd = pair
    snap = Snapshot(data_fd, idx_fd, 0, 0)
    try:
        idx_size = os.fstat(idx_fd).st_size
        lines = idx_size // lineindex.ENTRY_SIZE
        size = lineindex.read_entry(idx_fd, lines - 1)
        data_size = os.fstat(data_fd).st_size
        if idx_size % lineindex.ENTRY_SIZE or size > data_size:
            snap.close()
            return None  # damaged: the caller repairs and asks again
        snap.lines, snap.size = lines, size
        return snap
    except BaseException:
        snap.close()
        raise


def take(job_dir: Path) -> Snapshot | None:
    """The committed output of ``job_dir`` now (None: no output). Blocking: call off the event loop."""
    for _ in range(3):
        if not (job_dir / INDEX_NAME).exists() and not (job_dir / DATA_NAME).exists():
            return None
        try:
            snap = _open(job_dir)
        except EOFError:
            continue  # the index was cut under us by a repair elsewhere: look again
        if snap is not None:
            return snap
        if not (job_dir / INDEX_NAME).exists():
            return None
        _repair_if_idle(job_dir)
    return None
