"""Advisory file locks (flock) that die with their process.

A job's writer holds ``job.lock`` exclusively for as long as it appends, so another
process can tell a live writer from a dead one without any heartbeat: if the lock
can be taken, nobody is writing.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FileLock", "try_lock", "is_locked"]


class FileLock:
    """An exclusive flock on ``path``, held until ``release`` (or process death)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, *, blocking: bool) -> FileLock | None:
        """Lock ``path`` (created if missing); None if held elsewhere and not ``blocking``.

        The folder must exist: a lock never recreates a folder that was just removed (a
        target deleted while a reader looked at it). FileNotFoundError says it is gone.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    @property
    def fd(self) -> int:
        """The locked descriptor: a child process given it (``pass_fds``) keeps the lock while it lives."""
        if self._fd is None:
            raise ValueError("the lock was released")
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def try_lock(path: Path) -> Iterator[FileLock | None]:
    """Take the lock if it is free; yields None when someone else holds it."""
    lock = FileLock.acquire(path, blocking=False)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def is_locked(path: Path) -> bool:
    if not path.exists():
        return False
    with try_lock(path) as lock:
        return lock is None
