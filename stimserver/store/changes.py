"""One shared change word per data directory, so a cache hit can skip its ``stat`` (issue 13).

``DATA/.changes`` holds a 64-bit word that every process of this host maps
(``MAP_SHARED``: one page-cache page, so a store by one process is seen by the next load
in any other). Every change the store makes — an atomic write, a rename or unlink
followed by ``atomic.fsync_dir``, a repair that truncates in place — ends by storing a
fresh random word (``notice``). A reader keeps, with each cached record or open output,
the word it read *before* it checked the file; while the word is the same and the check
is younger than ``RECHECK_SECONDS``, nothing the store does has happened since, and the
hit needs no ``stat``. Random words, not a counter: two writers racing cannot store a
value a reader already holds, so a change is never hidden by a lost increment.

Changes made by hand (an editor, ``mv``) do not store a word; they are seen within
``RECHECK_SECONDS``, when the hit checks the file again. The word is trusted only on a
local file system: on a network one (GlusterFS, NFS, CephFS) another host's change
never reaches this host's page, so there every read checks the file as before
(docs/multihost.md).
"""
from __future__ import annotations

import logging
import mmap
import os
import threading
import time
from pathlib import Path

__all__ = ["ChangeBoard", "board_for", "notice", "RECHECK_SECONDS", "BOARD_NAME", "local_file_system"]

log = logging.getLogger("stimserver.store")

BOARD_NAME = ".changes"
RECHECK_SECONDS = 1.0  # the bound for changes made outside the store (docs/storage.md)
_SIZE = mmap.PAGESIZE
# File systems whose pages every process of a host shares; any other (FUSE, NFS, CIFS,
# Ceph, 9p, ...) may be changed from another host, so its word is never trusted.
LOCAL_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "overlay",
                         "bcachefs", "jfs", "reiserfs", "ramfs", "nilfs2"})


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def local_file_system(path: Path, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether ``path`` lies on a local file system (its mount's type is in ``LOCAL_TYPES``)."""
    try:
        real = os.path.realpath(path)
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    best, best_type = "", ""
    for line in lines:
        fields = line.split(" ")
        if "-" not in fields or len(fields) < 5:
            continue
        point = _unescape(fields[4])
        fs_type = fields[fields.index("-") + 1] if fields.index("-") + 1 < len(fields) else ""
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fs_type
    return best_type in LOCAL_TYPES


class ChangeBoard:
    """The change word of one data directory; see the module doc."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._view: memoryview | None = None
        # On a network file system the board is never made: its word could not be trusted,
        # and mmap there may fail (FUSE with direct I/O) on every try. Decided once, at start.
        self.trusted = local_file_system(root)
        self._lock = threading.Lock()
        self._tried = -float("inf")  # monotonic time of the last failed open (retried once a second)
        if self.trusted:
            self._open()

    def _open(self) -> None:
        self._tried = time.monotonic()
        try:
            fd = os.open(self.root / BOARD_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return  # no data directory yet (or read-only): readers check files, writers retry
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # every opener truncates to the same size: a race is harmless
            self._view = memoryview(mmap.mmap(fd, _SIZE)).cast("Q")
        except (OSError, ValueError) as e:
            log.warning("no change board in %s (%s): every read checks its file", self.root, e)
            self.trusted = False  # not retried: this file system cannot map it
        finally:
            os.close(fd)

    def _reopen(self) -> memoryview | None:
        """The view, opening it if the last try is over ``RECHECK_SECONDS`` old (the directory may exist now)."""
        if self.trusted and time.monotonic() - self._tried >= RECHECK_SECONDS:
            with self._lock:
                if self._view is None and time.monotonic() - self._tried >= RECHECK_SECONDS:
                    self._open()
        return self._view

    def word(self) -> int | None:
        """The current word, or None when it cannot be trusted (then check the file)."""
        view = self._view
        if view is None:
            view = self._reopen()
            if view is None:
                return None
        return view[0] if self.trusted else None

    def bump(self) -> None:
        """Say that something under the data directory changed (after the change is made)."""
        view = self._view
        if view is None:
            if not self.trusted:
                return
            with self._lock:  # a writer may be the one that just made the directory: try at once
                if self._view is None:
                    self._open()
                view = self._view
            if view is None:
                return
        view[0] = int.from_bytes(os.urandom(8), "little")


_boards: dict[str, ChangeBoard] = {}  # by the real path of the root
_spellings: dict[str, ChangeBoard] = {}  # by each spelling of a root this process used, + os.sep
_registry_lock = threading.Lock()


def board_for(root: Path) -> ChangeBoard:
    """The board of the data directory ``root`` (one per directory and process)."""
    spelling = os.path.join(str(root), "")
    board = _spellings.get(spelling)
    if board is not None:
        return board
    with _registry_lock:
        real = os.path.realpath(root)
        board = _boards.get(real)
        if board is None:
            board = _boards[real] = ChangeBoard(root)
        _spellings[spelling] = board
        return board


def notice(path: Path | str) -> None:
    """A change at ``path`` was made: bump the board of every data directory holding it."""
    text = str(path)
    for spelling, board in list(_spellings.items()):
        if text.startswith(spelling) or text == spelling[:-1]:
            board.bump()
