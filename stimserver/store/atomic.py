"""Crash-safe file writes: temp file, fsync, rename, fsync the directory.

A reader (or a crash) sees either the old file or the new one, never a mix. The
temp file lives in the target's own directory so the rename never crosses a
filesystem, and its name starts with '.' and carries '.tmp-' so a sweep can tell
leftovers of a crash from records.
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import orjson

__all__ = ["write_atomic", "write_json_atomic", "create_json_exclusive", "fsync_dir", "sweep_temp_files"]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: object) -> None:
    write_atomic(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")


def create_json_exclusive(path: Path, obj: object) -> bool:
    """Create ``path`` holding ``obj`` only if it does not exist yet.

    Returns False (writing nothing) when it already exists. ``link`` is atomic and
    fails on an existing name, so of two racing creators exactly one wins.
    """
    tmp = _write_temp(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def sweep_temp_files(root: Path, older_than: float = 3600.0) -> int:
    """Remove temp files a crash left behind under ``root``; returns how many.

    Only files untouched for ``older_than`` seconds: another process sharing the data
    directory may be writing one right now.
    """
    removed = 0
    if not root.exists():
        return 0
    cutoff = time.time() - older_than
    for p in root.rglob(".*.tmp-*"):
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except OSError:
            pass
    return removed
