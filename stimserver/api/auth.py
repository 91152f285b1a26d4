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
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from aiohttp import web

from ..store.cache import FileCache
from ..store.keys import KeyFile
from ..store.paths import check_name
from .errors import Forbidden, Unauthorized
from .identity import Identity
from .keys import IDENTITY

__all__ = ["AUTH", "Identity", "Authenticator", "CookieSessions", "KeyStore", "authenticate", "hash_token",
           "generate_master_key", "PUBLIC_PATHS", "TOKEN_PREFIX", "UI_PREFIX", "DOWNLOAD_PREFIX"]

PUBLIC_PATHS = frozenset({"/v1/health", "/openapi.json", "/metrics", "/ui"})
AUTH: web.AppKey[Authenticator] = web.AppKey("AUTH")
UI_PREFIX = "/ui/"  # the viewer's pages and its sign-in check their session themselves (handlers/ui.py)
# Signed, expiring bake download links: the link is the permission, checked by handlers/downloads.py.
DOWNLOAD_PREFIX = "/v1/downloads/"
TOKEN_PREFIX = "ssk_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def generate_master_key() -> str:
    return "ssm_" + secrets.token_urlsafe(32)


class KeyStore:
    """User API keys: makes tokens and checks them; ``store.keys.KeyFile`` keeps the records."""

    def __init__(self, path: Path, cache: FileCache | None = None) -> None:
        self.path = path
        self.file = KeyFile(path, cache)

    def create(self, user: str, note: str = "") -> tuple[dict[str, Any], str]:
        """Make a key for ``user``; returns (record, token). The token is shown once."""
        check_name(user, "user", "cli")
        key_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        return self.file.add(key_id, user, hash_token(token), note), token

    def revoke(self, key_id: str) -> dict[str, Any] | None:
        return self.file.revoke(key_id)

    def list(self) -> list[dict[str, Any]]:
        return self.file.list()

    def user_for(self, token: str, digest: str | None = None) -> str | None:
        """The user a live token belongs to, or None. ``digest``: its hash_token, if known."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        record = self.file.by_id(token[len(TOKEN_PREFIX):].split("_", 1)[0])
        if record is None or not hmac.compare_digest(str(record.get("hash", "")), digest or hash_token(token)):
            return None
        user = record.get("user")
        return None if record.get("revoked_at") or not isinstance(user, str) else user


_ACCEPTED_SIZE = 1024


class _Accepted(NamedTuple):
    """An accepted Authorization header: the key records' version it was checked against, and what it is."""

    version: object
    user: str
    is_master: bool
    identity: Identity


class CookieSessions(Protocol):
    """What auth asks of the viewer's sessions (``sessions.Sessions``): the identity a cookie signs in as."""

    def identify(self, request: web.Request) -> Identity | None: ...


class Authenticator:
    def __init__(self, master_key: str, master_user: str, keystore: KeyStore) -> None:
        self._master_hash = hash_token(master_key)
        self.master_user = master_user
        self.keystore = keystore
        self._identities: dict[str, Identity] = {}
        self._accepted: dict[str, _Accepted] = {}  # Authorization header → see _accepted_header
        self.sessions: CookieSessions | None = None  # the viewer's cookies (sessions.py), set by create_app

    @property
    def master_hash(self) -> str:
        return self._master_hash

    def _own_identity(self, user: str) -> Identity:
        """``Identity(user, user, False)``, made once per user: it is immutable, and a page asks every time."""
        found = self._identities.get(user)
        if found is None:
            if len(self._identities) >= 4096:
                self._identities.clear()
            found = self._identities[user] = Identity(user, user, False)
        return found

    def _key_of(self, header: str | None) -> tuple[str, bool]:
        """(the key's user, whether it is the master key) of an Authorization header; 401 otherwise."""
        accepted = self._accepted_header(header)
        return accepted.user, accepted.is_master

    def _accepted_header(self, header: str | None) -> _Accepted:
        """What an Authorization header was accepted as; 401 if it is not.

        An accepted header is remembered with the version of the key records it was checked
        against (``KeyFile.version``), so the next request with it skips the hash: a sha256 and
        a compare per request were a measurable share of a page (issue 13). A revocation makes
        a new version, so it is refused within the same bound as before. Only accepted headers
        are kept (at most ``_ACCEPTED_SIZE``), so refused guesses cannot fill it.
        """
        if not header:
            raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <API key>'")
        accepted = self._accepted.get(header)
        if accepted is not None and (accepted.is_master or accepted.version is self.keystore.file.version()):
            return accepted
        version = self.keystore.file.version()  # before the check: a change during it makes a newer one
        user, is_master = self._check_key(header)
        identity = Identity(user, user, True) if is_master else self._own_identity(user)
        if len(self._accepted) >= _ACCEPTED_SIZE:
            self._accepted.clear()
        accepted = self._accepted[header] = _Accepted(version, user, is_master, identity)
        return accepted

    def _check_key(self, header: str) -> tuple[str, bool]:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <API key>'")
        digest = hash_token(token)
        if hmac.compare_digest(digest, self._master_hash):
            return self.master_user, True
        found = self.keystore.user_for(token, digest)
        if found is None:
            raise Unauthorized("invalid or revoked API key")
        return found, False

    def plain_identity(self, header: str | None) -> Identity | None:
        """``identify`` of a request that names no user (no ``X-User-Id``, no ``user_id``); None if refused.

        The caller makes sure no user is named; a refused key is left to ``identify``,
        which raises the error that names why.
        """
        try:
            return self._accepted_header(header).identity
        except Unauthorized:
            return None

    def identify(self, request: web.Request) -> Identity:
        key_user, is_master = self._key_of(request.headers.get("Authorization"))
        by_header = request.headers.get("X-User-Id", "")
        by_query = request.query.get("user_id", "")
        if not is_master:  # a user key may only name itself, wherever it names anyone
            if (by_header and by_header != key_user) or (by_query and by_query != key_user):
                raise Forbidden("only the master key may act as another user (X-User-Id / user_id)")
            return self._own_identity(key_user)
        # The header wins: the official client's generated calls send both, with different values.
        # The losing user_id must still be a valid name: every parameter is checked.
        if by_header and by_query:
            check_name(by_query, "user_id", "query")
        override = by_header or by_query
        if not override or override == key_user:
            return Identity(key_user, key_user, True)
        check_name(override, "user_id", "header" if by_header else "query")
        return Identity(override, key_user, True)


def authenticate(request: web.Request, auth: Authenticator) -> None:
    """Set the request's ``IDENTITY`` unless its path is public; raises 401/403/422 as ``identify``.

    Without an ``Authorization`` header, a viewer session cookie may stand in for a read (sessions.py).
    """
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(UI_PREFIX) or path.startswith(DOWNLOAD_PREFIX):
        return
    if auth.sessions is not None and "Authorization" not in request.headers:
        found = auth.sessions.identify(request)
        if found is not None:
            request[IDENTITY] = found
            return
    request[IDENTITY] = auth.identify(request)
