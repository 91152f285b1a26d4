"""Checks ``serve`` makes before it writes anything, and the undo of a start it refused.

A refused start must leave the disk as it found it: so the data directory and the
master key are checked without creating them, the port is bound, and only then are
they created; if the start still fails, ``undo`` removes what was created.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from ..config import Settings
from .masterkey import MasterKeyMissing, load_master_key

__all__ = ["check_data_dir", "first_missing", "probe_data_dir", "probe_master_key", "probe_prices", "undo"]


def probe_prices(data_dir: Path) -> str | None:
    """Why the data directory's price table (``DATA/prices.json``, ``llm.prices``) is unusable, or None."""
    from ..llm.prices import load_prices

    try:
        load_prices(data_dir)
    except ValueError as e:
        return f"price table: {e}"
    return None


def check_data_dir(path: Path) -> str | None:
    """Why ``path`` cannot hold stimserver's data, or None if it can; creates it if missing."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"data directory {path} is a file, not a directory"
    except OSError as e:
        return f"cannot create data directory {path}: {e.strerror}"
    if not path.is_dir():
        return f"data directory {path} is not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True) as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return f"data directory {path} is not writable: {e.strerror}"
    return None


def probe_data_dir(path: Path) -> str | None:
    """Why ``path`` cannot hold stimserver's data, or None if it can; creates nothing that stays."""
    if path.exists():
        if not path.is_dir():
            return f"data directory {path} is a file, not a directory"
        return check_data_dir(path)  # exists: only its probe file comes and goes
    ancestor = first_missing(path).parent
    if not ancestor.is_dir():
        return f"cannot create data directory {path}: {os.strerror(errno.ENOTDIR)}"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create data directory {path}: {os.strerror(errno.EACCES)}"
    return None


def first_missing(path: Path) -> Path:
    """The outermost folder of ``path`` that does not exist yet (``path`` itself at most)."""
    path = path.absolute()
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def probe_master_key(settings: Settings) -> str | None:
    """Why the configured or stored master key is unusable, or None; a missing key file is fine."""
    key_file = settings.resolved_master_key_file
    if not settings.master_key and not key_file.exists():
        if key_file.parent.absolute().is_relative_to(settings.data_dir) or key_file.parent.is_dir():
            return None  # made with the data directory, or beside files that exist
        ancestor = first_missing(key_file.parent).parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            return f"cannot create master key file {key_file}: {ancestor} is not a writable directory"
        return None
    try:
        load_master_key(settings)
    except (MasterKeyMissing, OSError) as e:
        return str(e)
    return None


def undo(made: list[Path], settings: Settings, *, created: bool) -> None:
    """Remove what a refused start created: the folders it made, else the key file it wrote."""
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
    key_file = settings.resolved_master_key_file
    if created and key_file.exists():
        key_file.unlink(missing_ok=True)
