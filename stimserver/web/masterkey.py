"""Where the master key comes from: the settings, else a key file beside the data.

``serve`` calls ``ensure_master_key`` so that a fresh data directory gets a random
master key (file mode 0600) on first start — auth is never switched off, and the
newcomer is told where the key is instead of being shown it in a log.
"""
from __future__ import annotations

import os

from ..api.auth import generate_master_key
from ..config import Settings

__all__ = ["load_master_key", "ensure_master_key", "MasterKeyMissing"]


class MasterKeyMissing(RuntimeError):
    pass


def _read(path: os.PathLike[str]) -> str:
    with open(path, encoding="utf-8") as f:
        key = f.read().strip()
    if len(key) < 16:
        raise MasterKeyMissing(f"master key file {path} holds fewer than 16 characters")
    return key


def load_master_key(settings: Settings) -> str:
    if settings.master_key:
        if len(settings.master_key) < 16:
            raise MasterKeyMissing("STIMSERVER_MASTER_KEY must be at least 16 characters")
        return str(settings.master_key)
    path = settings.resolved_master_key_file
    try:
        return _read(path)
    except FileNotFoundError:
        raise MasterKeyMissing(
            f"no master key: set STIMSERVER_MASTER_KEY or create {path} (stimserver serve does it)"
        ) from None


def ensure_master_key(settings: Settings) -> bool:
    """Create the key file with a random key unless a key is configured; True if created."""
    if settings.master_key:
        return False
    path = settings.resolved_master_key_file
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(generate_master_key() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True
