"""The one cache of parsed files, validated by the file's identity on every read.

Every file the store reads often (job records on the paging path, target and repo
records, ``keys.json``, job records during a runner's scan or a metrics scrape, dataset
files) goes through a ``FileCache``: a hit costs one ``stat``, and a file changed by any
process — atomic renames give it a new inode, appends a new size or mtime — is read again.
A cache given a ``changes.ChangeBoard`` skips that ``stat`` while the board says the store
changed nothing since the file was last checked (and that check is under a second old).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from .atomic import read_replaced
from .changes import RECHECK_SECONDS, ChangeBoard

__all__ = ["FileCache", "Identity", "file_identity"]

log = logging.getLogger("stimserver.store")

Identity = tuple[int, int, int]  # (inode, size, mtime_ns)
T = TypeVar("T")


def file_identity(st: os.stat_result) -> Identity:
    return st.st_ino, st.st_size, st.st_mtime_ns


class FileCache:
    """An LRU of JSON objects by path; thread-safe, so a scan in a thread may share it.

    Records are written atomically, so one that is not a JSON object was damaged from
    outside: it reads as absent (with a warning in the log) rather than failing every
    request that touches it.
    """

    def __init__(self, size: int = 4096, board: ChangeBoard | None = None) -> None:
        self._size = size
        self._items: OrderedDict[Path, tuple[Identity, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.board = board
        # path -> (board word read before the file's last check, monotonic time of that check)
        self._checked: dict[Path, tuple[int, float]] = {}

    def load(self, path: Path, parse: Callable[[Path], T]) -> T:
        """``parse(path)``, reused while the file keeps its identity; OSError if it cannot be stat'ed.

        One cache holds one kind of value: a path is always parsed by the same ``parse``.
        """
        ident = file_identity(os.stat(path))
        with self._lock:
            hit = self._items.get(path)
            if hit is not None and hit[0] == ident:
                self._items.move_to_end(path)
                return cast(T, hit[1])
        value = parse(path)
        self._remember(path, ident, value)
        return value

    def read(self, path: Path) -> dict[str, Any] | None:
        """The JSON object in ``path``, or None if it is missing or not a JSON object."""
        return self.read_versioned(path)[0]

    def read_versioned(self, path: Path) -> tuple[dict[str, Any] | None, Identity | None]:
        """``read`` plus the identity of the file the answer came from (None: no file).

        The identity lets a caller keep something derived from the record (e.g. the open
        output files of a complete job) exactly as long as the record is the same file.
        """
        board = self.board
        word = None if board is None else board.word()
        if word is not None:
            checked = self._checked.get(path)
            if checked is not None and checked[0] == word and time.monotonic() - checked[1] < RECHECK_SECONDS:
                hit = self._items.get(path)
                if hit is not None:
                    return cast("dict[str, Any] | None", hit[1]), hit[0]
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self.forget(path)
            return None, None
        ident = file_identity(st)
        with self._lock:
            hit = self._items.get(path)
            if hit is not None and hit[0] == ident:
                self._items.move_to_end(path)
                if word is not None:
                    self._checked[path] = (word, time.monotonic())
                return cast("dict[str, Any] | None", hit[1]), ident
        try:
            value = orjson.loads(read_replaced(path))
        except (FileNotFoundError, NotADirectoryError):
            return None, None
        except (orjson.JSONDecodeError, OSError) as e:
            log.warning("ignoring unreadable record %s: %s", path, e)
            value = None
        record: dict[str, Any] | None = value if isinstance(value, dict) else None
        if record is None and value is not None:
            log.warning("ignoring record %s: not a JSON object", path)
        self._remember(path, ident, record)
        if word is not None:  # read before the stat: a change since then stored another word
            with self._lock:
                if path in self._items:
                    self._checked[path] = (word, time.monotonic())
        return record, ident

    def _remember(self, path: Path, ident: Identity, value: object) -> None:
        with self._lock:
            self._items[path] = (ident, value)
            self._items.move_to_end(path)
            if len(self._items) > self._size:
                self._checked.pop(self._items.popitem(last=False)[0], None)

    def __len__(self) -> int:
        return len(self._items)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._items.pop(path, None)
            self._checked.pop(path, None)

    def keep_only(self, paths: set[Path]) -> None:
        """Drop every entry not in ``paths`` (a scan saw the rest disappear)."""
        with self._lock:
            for path in [p for p in self._items if p not in paths]:
                del self._items[path]
                self._checked.pop(path, None)
