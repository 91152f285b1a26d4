"""``DATA/keys.json``: user API key records (ids, users, SHA-256 hashes — never tokens).

Format: ``{"keys": [{"id", "user", "hash", "note", "created_at", "revoked_at"}, ...]}``.
Changes hold ``DATA/.keys.lock`` (an flock shared by every process, e.g. the CLI
beside a running server) and replace the file atomically. Lookups (one per request)
do not stat the file each time: it is checked at most every ``RECHECK_SECONDS``, so a
key revoked by another process is refused here within that bound (0.5 s); a key made
elsewhere works at once (an unknown id makes the file be looked at), and a change made
through this ``KeyFile`` is seen at once. The check compares the file's identity
(an atomic replace makes a new inode), so no change can go unseen.
"""
from __future__ import annotations

import builtins
import time
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic
from .cache import FileCache
from .locks import FileLock
from .records import now_iso

__all__ = ["KeyFile", "RECHECK_SECONDS"]

RECHECK_SECONDS = 0.5  # the documented revocation bound across processes (docs/auth.md)

KeyRecord = dict[str, Any]


class KeyFile:
    """Create, revoke, list and find key records; token making and hashing are the caller's."""

    def __init__(self, path: Path, cache: FileCache | None = None, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.path = path
        self._cache = FileCache(size=4) if cache is None else cache
        self._indexed: dict[str, Any] | None = None
        self._index: dict[str, KeyRecord] = {}
        self.recheck_seconds = recheck_seconds
        self._checked_at = -float("inf")  # monotonic time of the last look at the file
        self._just_looked = False  # the last _by_id looked at the file

    def by_id(self, key_id: str) -> KeyRecord | None:
        """The record of ``key_id``; an id not known yet makes the file be looked at now.

        So a key made by another process works at once; only a revocation waits for the
        next periodic check.
        """
        found: KeyRecord | None = self._by_id().get(key_id)
        if found is None and not self._just_looked:
            found = self._by_id(force=True).get(key_id)
        return found

    def version(self) -> object:
        """What stays the same object while the key records do; looked at as ``by_id`` looks.

        Lets a caller keep a decision about a key (``auth.Authenticator``) until keys.json
        changes, with the same revocation bound as ``by_id``.
        """
        if time.monotonic() - self._checked_at < self.recheck_seconds:  # _by_id's first step, one call less
            return self._index
        return self._by_id()

    def list(self) -> builtins.list[KeyRecord]:
        """Every key record without its hash."""
        return [{k: v for k, v in r.items() if k != "hash"} for r in self._by_id().values()]

    def add(self, key_id: str, user: str, digest: str, note: str = "") -> KeyRecord:
        record: KeyRecord = {"id": key_id, "user": user, "hash": digest, "note": note,
                             "created_at": now_iso(), "revoked_at": None}
        with self._lock():
            records = self._records_for_update()
            records.append(record)
            self._write(records)
        return record

    def revoke(self, key_id: str) -> KeyRecord | None:
        """Mark a key revoked (once); the record, or None if no key has that id."""
        with self._lock():
            records = self._records_for_update()
            for r in records:
                if r.get("id") == key_id:
                    if r.get("revoked_at") is None:
                        r["revoked_at"] = now_iso()
                        self._write(records)
                    return r
        return None

    def _by_id(self, force: bool = False) -> dict[str, KeyRecord]:
        """Key records by id, rebuilt only when keys.json changed (the cache says so).

        Looks at the file at most every ``recheck_seconds``: a stat per request was a
        measurable share of a page (issue 13), and the bound is what revocation promises.
        """
        now = time.monotonic()
        if not force and now - self._checked_at < self.recheck_seconds:
            self._just_looked = False
            return self._index
        data = self._cache.read(self.path)
        self._checked_at, self._just_looked = now, True
        if data is not self._indexed:
            keys = data.get("keys", []) if data is not None else []
            self._index = {r["id"]: r for r in keys if isinstance(r, dict) and isinstance(r.get("id"), str)}
            self._indexed = data
        return self._index

    def _records_for_update(self) -> builtins.list[KeyRecord]:
        """The records to rewrite; refuses when keys.json exists but cannot be read."""
        data = self._cache.read(self.path)
        if data is None and self.path.exists():
            raise OSError(f"{self.path} is damaged (not a JSON object); fix or move it first")
        keys = data.get("keys", []) if data is not None else []
        return [r for r in keys if isinstance(r, dict)] if isinstance(keys, builtins.list) else []

    def _write(self, records: builtins.list[KeyRecord]) -> None:
        write_json_atomic(self.path, {"keys": records})
        self._cache.forget(self.path)
        self._checked_at = -float("inf")  # this process sees its own change at once

    def _lock(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock.acquire(self.path.with_name(".keys.lock"), blocking=True)
        if lock is None:  # cannot happen: a blocking acquire waits
            raise OSError("could not lock the keys file")
        return lock
