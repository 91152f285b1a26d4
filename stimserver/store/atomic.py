"""Crash-safe file writes: temp file, fsync, rename, fsync the directory.

A reader (or a crash) sees either the old file or the new one, never a mix. The
temp file lives in the target's own directory so the rename never crosses a
filesystem, and its name starts with '.' and carries '.tmp-' so a sweep can tell
leftovers of a crash from records.
"""
from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson

from .changes import notice
from .errors import NoSpace

__all__ = ["write_atomic", "write_json_atomic", "create_json_exclusive", "fsync_dir", "sweep_temp_files",
           "no_space", "is_no_space", "stage_json", "commit_staged", "RESERVE_NAME", "ensure_reserve",
           "release_reserve", "create_exclusive", "read_or_create_secret", "read_replaced", "STALE_RETRIES"]

T = TypeVar("T")
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 1 << 20


STALE_RETRIES = 5


def read_replaced(path: Path) -> bytes:
    """The whole of a file that other processes replace by rename (a record), as it is now.

    On a network filesystem another host's rename can land between our lookup of the
    name and our read: the old file is gone at the server, and the open or the read fails
    with ESTALE (GlusterFS FUSE does so; a local disk keeps the old file readable). The
    name then points at the new file, so looking it up again gives the current record.
    """
    for attempt in range(STALE_RETRIES + 1):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            if e.errno != errno.ESTALE or attempt == STALE_RETRIES:
                raise
    raise AssertionError("unreachable")


def is_no_space(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT: the disk or the quota is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def no_space(what: str) -> NoSpace:
    """The one wording of a full disk; ``what`` names the file by its record name, never a server path."""
    return NoSpace(f"the disk is full: {what} could not be stored; nothing was changed. "
                   "Free some space in the server's data directory, then try again")


def _guarded(path: Path, fn: Callable[[], T]) -> T:
    """``fn()``, with a full disk turned into ``NoSpace`` naming ``path``'s file."""
    try:
        return fn()
    except OSError as e:
        if is_no_space(e):
            raise no_space(path.name) from e
        raise


def fsync_dir(path: Path) -> None:
    """Make the renames and unlinks in ``path`` durable, then tell readers (``changes.notice``).

    Every change of a name in the store ends here, so this is where the change board learns of it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    notice(path)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_temp(path: Path, data: bytes) -> Path:
    """The data in a durable temp file beside ``path``; on any failure no temp file is left."""
    return _guarded(path, lambda: _write_temp_raw(path, data))


def _write_temp_raw(path: Path, data: bytes, folder: Path | None = None, mode: int = 0o644) -> Path:
    folder = path.parent if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.tmp-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    commit_staged(_write_temp(path, data), path)


def write_json_atomic(path: Path, obj: object) -> None:
    write_atomic(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")


def create_json_exclusive(path: Path, obj: object) -> bool:
    """Create ``path`` holding ``obj`` only if it does not exist yet.

    Returns False (writing nothing) when it already exists. ``link`` is atomic and
    fails on an existing name, so of two racing creators exactly one wins.
    """
    return create_exclusive(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")


def create_exclusive(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """``create_json_exclusive`` for bytes; the file gets ``mode`` (0o600 for a secret) from its first byte."""
    tmp = _guarded(path, lambda: _write_temp_raw(path, data, mode=mode))
    try:
        _guarded(path, lambda: os.link(tmp, path))
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    _guarded(path, lambda: fsync_dir(path.parent))
    return True


def read_or_create_secret(path: Path, nbytes: int = 32) -> bytes:
    """The random secret in ``path``, made (mode 0600, atomically) by whichever process asks first.

    Every process and host sharing the data directory reads the same bytes: of racing
    creators one ``link`` wins and the others read the winner's file.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        create_exclusive(path, secrets.token_bytes(nbytes), mode=0o600)
        data = path.read_bytes()
    if len(data) < 16:
        raise ValueError(f"{path.name} holds fewer than 16 bytes: remove it to have a new one made")
    return data


def stage_json(path: Path, obj: object, folder: Path) -> Path:
    """A durable temp file in ``folder`` (same filesystem) that ``commit_staged`` renames onto ``path``.

    For a change that must first succeed in writing (a full disk changes nothing) and
    only then remove other files.
    """
    data = orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"
    return _guarded(path, lambda: _write_temp_raw(path, data, folder))


def commit_staged(tmp: Path, path: Path) -> None:
    """Rename the durable temp file ``tmp`` onto ``path`` and make the rename durable."""
    try:
        _guarded(path, lambda: os.replace(tmp, path))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _guarded(path, lambda: fsync_dir(path.parent))


def ensure_reserve(root: Path) -> bool:
    """Keep ``RESERVE_BYTES`` of real blocks in ``root/.reserve``; False if there is no room now.

    A job whose writer hits a full disk releases it to record its own failure (a few
    KB): without it, the very write that says "the disk is full" would fail too.
    """
    path = root / RESERVE_NAME
    try:
        if path.stat().st_size >= RESERVE_BYTES:
            return True
    except FileNotFoundError:
        pass
    tmp = root / f".{RESERVE_NAME}.tmp-{secrets.token_hex(6)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            block = bytes(1 << 16)
            for _ in range(RESERVE_BYTES // len(block)):  # written, not sparse: the blocks are really taken
                os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def release_reserve(root: Path) -> bool:
    """Give the reserve's blocks back to the filesystem; True if there was one."""
    try:
        (root / RESERVE_NAME).unlink()
        return True
    except FileNotFoundError:
        return False


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
