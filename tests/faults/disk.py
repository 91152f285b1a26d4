"""An in-process full disk: ENOSPC from ``os.write``/``os.fsync``/``os.pwrite`` on chosen files.

Files are told apart by what their descriptor points at (``/proc/self/fd``), so only
writes under the data directory fail, whichever module makes them. Once a fault fires
the disk stays full (every write under the root fails) until the test frees it, or
until something deletes ``DATA/.reserve``, which gives the space back as it would.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from stimserver.store.atomic import RESERVE_NAME

# step name → (system call, which file): the writer's steps and the record/temp file writes
STEPS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "data write": ("write", lambda p: p.endswith("/output.jsonl")),
    "data fsync": ("fsync", lambda p: p.endswith("/output.jsonl")),
    "index append": ("write", lambda p: p.endswith("/output.idx")),
    "index fsync": ("fsync", lambda p: p.endswith("/output.idx")),
    "record write": ("write", lambda p: "/.job.json.tmp-" in p),
    "temp file": ("write", lambda p: ".tmp-" in p),
}


class FullDisk:
    """Arm with ``fail(step, after=n)``: the (n+1)-th matching call fails, and the disk is full from then on."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = str(root.resolve())
        self.step: str | None = None
        self.after = 0
        self.full = False
        self.failures: list[tuple[str, str]] = []  # (call, file) of every ENOSPC raised
        self._real = {name: getattr(os, name) for name in ("write", "fsync", "pwrite")}
        for name in self._real:
            monkeypatch.setattr(os, name, self._wrap(name))

    def fail(self, step: str, after: int = 0) -> None:
        self.step, self.after = step, after

    def free(self) -> None:
        self.step, self.full = None, False

    def _reserve_released(self) -> bool:
        return not os.path.exists(os.path.join(self.root, RESERVE_NAME))

    def _check(self, call: str, fd: int) -> None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if not path.startswith(self.root + "/"):
            return
        if not self.full and self.step is not None:
            want_call, matches = STEPS[self.step]
            if want_call == call and matches(path):
                if self.after > 0:
                    self.after -= 1
                    return
                self.full = True
                self.reserve_was_there = not self._reserve_released()
        if self.full and not (self.reserve_was_there and self._reserve_released()):
            self.failures.append((call, path))
            raise OSError(errno.ENOSPC, "No space left on device")

    reserve_was_there = False

    def _wrap(self, name: str) -> Callable[..., object]:
        real = self._real[name]

        def call(fd: int, *args: object) -> object:
            self._check(name, fd)
            return real(fd, *args)

        return call
