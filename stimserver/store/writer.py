"""The write side of a job's output: the single appender and the files' names.

``OutputWriter`` appends whole lines and makes them durable before indexing them:
write the data, fsync it, append the index entries, fsync the index. The number of
index entries is therefore the committed line count that readers (``store.output``)
see. An append that fails (a full disk) is cut back to the committed lines, so a
failure never leaves a torn tail behind.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

from . import lineindex
from .atomic import is_no_space, write_all
from .errors import NoSpace
from .locks import FileLock

log = logging.getLogger("stimserver.output")

__all__ = ["OutputWriter", "encode", "repair", "lock_path", "DATA_NAME", "INDEX_NAME"]

DATA_NAME = "output.jsonl"
INDEX_NAME = "output.idx"


def lock_path(job_dir: Path) -> Path:
    """The job's writer lock, beside (not inside) its folder so the folder can be swapped."""
    return job_dir.parent / f"{job_dir.name}.lock"


def repair(job_dir: Path) -> lineindex.RecoveryReport:
    """Recover the index from the data; the caller holds (or has checked) the job lock."""
    return lineindex.recover(job_dir / DATA_NAME, job_dir / INDEX_NAME)


class OutputWriter:
    """The single appender of one job's output; hold the job lock while it lives."""

    def __init__(self, job_dir: Path, data_fd: int, idx_fd: int, lines: int, size: int) -> None:
        self.job_dir = job_dir
        self._data_fd = data_fd
        self._idx_fd = idx_fd
        self.lines = lines
        self.size = size

    @classmethod
    def open(cls, job_dir: Path, lock: FileLock) -> OutputWriter:
        """Recover whatever a crash left, then open for appending."""
        if lock.path != lock_path(job_dir):
            raise ValueError("the writer needs this job's own lock")
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            report = repair(job_dir)
        except OSError as e:
            if is_no_space(e):
                raise NoSpace("the disk is full: the job's output could not be recovered before resuming "
                              f"(target '{job_dir.parent.name}'); nothing was changed") from e
            raise
        data_fd = os.open(job_dir / DATA_NAME, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        idx_fd = os.open(job_dir / INDEX_NAME, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        return cls(job_dir, data_fd, idx_fd, report.lines, report.data_size)

    def append(self, records: list[bytes]) -> int:
        """Append serialized JSON objects (one per line), durably; returns the new count.

        Each record must be one compact JSON object without a newline; ``encode`` makes one.
        """
        if not records:
            return self.lines
        ends = []
        pos = self.size
        for rec in records:
            if b"\n" in rec or not rec.startswith(b"{"):
                raise ValueError("a record must be one JSON object on one line")
            pos += len(rec) + 1
            ends.append(pos)
        data = b"\n".join(records) + b"\n"
        step = "writing output.jsonl"
        try:
            write_all(self._data_fd, data)
            step = "syncing output.jsonl"
            os.fsync(self._data_fd)
            step = "appending to output.idx"
            lineindex.append_entries(self._idx_fd, ends)
            step = "syncing output.idx"
            os.fsync(self._idx_fd)
        except OSError as e:
            self._roll_back()
            if is_no_space(e):
                raise NoSpace(f"the disk is full: the job's output could not be written at line {self.lines} "
                              f"({step} of target '{self.job_dir.parent.name}'); "
                              f"{self.lines} lines are committed and kept") from e
            raise
        self.size = pos
        self.lines += len(records)
        return self.lines

    def _roll_back(self) -> None:
        """Cut both files back to the committed lines after a failed append (cutting needs no space).

        Readers never saw the uncommitted bytes (the index is the commit), so nothing served
        changes, and no torn tail is left for a later repair to save as ``*.corrupt-*``.
        """
        try:
            os.ftruncate(self._idx_fd, self.lines * lineindex.ENTRY_SIZE)
            os.ftruncate(self._data_fd, self.size)
        except OSError:
            log.warning("could not cut the torn tail of %s; the next writer's recovery will", self.job_dir)

    def close(self) -> None:
        for fd in (self._data_fd, self._idx_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._data_fd = self._idx_fd = -1

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode(obj: dict[str, Any]) -> bytes:
    """One output record as compact JSON (never contains a raw newline)."""
    if not isinstance(obj, dict):
        raise TypeError("an output record is a JSON object")
    return orjson.dumps(obj)
