"""Bearer tokens, per-user API keys and the master key's user override.

Contract of ``Authenticator.identify``: it returns the ``Identity`` a request acts
as, or raises ``Unauthorized`` (401: no/malformed header, unknown or revoked key)
or ``Forbidden`` (403: a user key asking to act as someone else). Only the master key
may act as another user, and when it sends both ``X-User-Id`` and ``user_id`` the header
wins; a key acting as its own user is simply itself.

Keys: the master key comes from the settings (env ``STIMSERVER_MASTER_KEY``) or a
key file; user keys are made by ``stimserver keys create`` and kept in
``DATA/keys.json`` as SHA-256 hashes only. A user token is ``ssk_<id>_<secret>``:
the id finds the record, a constant-time comparison of hashes checks it. Tokens
never reach logs or error bodies.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

from aiohttp import web

from .errors import Forbidden, Unauthorized
from .keys import AUTH, IDENTITY
from .store.atomic import write_json_atomic
from .store.paths import check_name
from .store.records import RecordCache, now_iso

if TYPE_CHECKING:
    from .store.locks import FileLock

__all__ = ["Identity", "Authenticator", "KeyStore", "auth_middleware", "hash_token",
           "generate_master_key", "PUBLIC_PATHS"]

PUBLIC_PATHS = frozenset({"/v1/health", "/openapi.json", "/metrics"})
TOKEN_PREFIX = "ssk_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def generate_master_key() -> str:
    return "ssm_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Identity:
    user: str            # whose data the request reads and writes
    key_user: str        # who the key belongs to
    is_master: bool


class KeyStore:
    """User API keys in ``keys.json``; re-read whenever another process changed it."""

    def __init__(self, path: Path, cache: RecordCache | None = None) -> None:
        self.path = path
        self._cache = cache or RecordCache(size=4)
        self._indexed: dict | None = None
        self._index: dict[str, dict] = {}

    def _by_id(self) -> dict[str, dict]:
        """Key records by id, rebuilt only when keys.json changed (the cache says so)."""
        data = self._cache.read(self.path)
        if data is not self._indexed:
            keys = data.get("keys", []) if data is not None else []
            self._index = {r["id"]: r for r in keys if isinstance(r, dict) and isinstance(r.get("id"), str)}
            self._indexed = data
        return self._index

    def _records_for_update(self) -> list[dict]:
        """The records to rewrite; refuses when keys.json exists but cannot be read."""
        data = self._cache.read(self.path)
        if data is None and self.path.exists():
            raise OSError(f"{self.path} is damaged (not a JSON object); fix or move it first")
        return list(data.get("keys", [])) if data is not None else []

    def _lock(self) -> "FileLock":
        from .store.locks import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock.acquire(self.path.with_name(".keys.lock"), blocking=True)
        assert lock is not None
        return lock

    def create(self, user: str, note: str = "") -> tuple[dict, str]:
        """Make a key for ``user``; returns (record, token). The token is shown once."""
        check_name(user, "user", "cli")
        key_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = {"id": key_id, "user": user, "hash": hash_token(token), "note": note,
                  "created_at": now_iso(), "revoked_at": None}
        with self._lock():
            records = self._records_for_update()
            records.append(record)
            write_json_atomic(self.path, {"keys": records})
            self._cache.forget(self.path)
        return record, token

    def revoke(self, key_id: str) -> dict | None:
        with self._lock():
            records = self._records_for_update()
            for r in records:
                if r["id"] == key_id:
                    if r.get("revoked_at") is None:
                        r["revoked_at"] = now_iso()
                        write_json_atomic(self.path, {"keys": records})
                        self._cache.forget(self.path)
                    return r
        return None

    def list(self) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "hash"} for r in self._by_id().values()]

    def user_for(self, token: str, digest: str | None = None) -> str | None:
        """The user a live token belongs to, or None. ``digest``: its hash_token, if known."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        record = self._by_id().get(token[len(TOKEN_PREFIX):].split("_", 1)[0])
        if record is None or not hmac.compare_digest(str(record.get("hash", "")), digest or hash_token(token)):
            return None
        return None if record.get("revoked_at") else record.get("user")


class Authenticator:
    def __init__(self, master_key: str, master_user: str, keystore: KeyStore) -> None:
        self._master_hash = hash_token(master_key)
        self.master_user = master_user
        self.keystore = keystore

    def identify(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization")
        if not header:
            raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <API key>'")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <API key>'")
        digest = hash_token(token)
        if hmac.compare_digest(digest, self._master_hash):
            key_user, is_master = self.master_user, True
        else:
            found = self.keystore.user_for(token, digest)
            if found is None:
                raise Unauthorized("invalid or revoked API key")
            key_user, is_master = found, False

        by_header = request.headers.get("X-User-Id", "")
        by_query = request.query.get("user_id", "")
        if not is_master:  # a user key may only name itself, wherever it names anyone
            if any(name and name != key_user for name in (by_header, by_query)):
                raise Forbidden("only the master key may act as another user (X-User-Id / user_id)")
            return Identity(key_user, key_user, False)
        # The header wins: the official client's generated calls send both, with different values.
        override = by_header or by_query
        if not override or override == key_user:
            return Identity(key_user, key_user, True)
        check_name(override, "user_id", "header" if by_header else "query")
        return Identity(override, key_user, True)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    request[IDENTITY] = request.app[AUTH].identify(request)
    return await handler(request)
