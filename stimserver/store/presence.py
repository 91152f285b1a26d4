"""Runner presence: each live job runner holds an flock on its own file in ``DATA/runners/``.

The flock dies with its process, so counting the locks that cannot be taken counts the
live runners of a data directory, with no heartbeat to miss.
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from .locks import try_lock
from .paths import DataPaths

__all__ = ["Presence", "live_runners", "runners_dir"]


def runners_dir(paths: DataPaths) -> Path:
    return paths.root / "runners"


class Presence:
    """This runner's flock in ``DATA/runners/``, held while the runner lives."""

    def __init__(self, paths: DataPaths, runner_id: str) -> None:
        self.path = runners_dir(paths) / f"{socket.gethostname()}-{os.getpid()}-{runner_id}.lock"
        self._fd: int | None = None

    def register(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else a sweep removed the file between open and flock: make a new one
                self._fd = fd
                return
            os.close(fd)

    def unregister(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def live_runners(paths: DataPaths) -> int:
    """How many runners hold their presence lock; removes the files of dead ones."""
    folder = runners_dir(paths)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    alive = 0
    for name in names:
        if not name.endswith(".lock"):
            continue
        path = folder / name
        try:
            with try_lock(path) as lock:
                if lock is None:
                    alive += 1
                else:
                    path.unlink(missing_ok=True)
        except FileNotFoundError:
            continue
    return alive
