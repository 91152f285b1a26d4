"""Browser sessions of the viewer (``/ui/``): a signed cookie instead of a bearer header.

Sign-in (``POST /ui/session`` with the API key in a JSON body) checks the key like a
bearer token and answers with a cookie; the key itself is never stored, echoed or put
in a URL. The cookie's value is ``PAYLOAD.MAC``: base64url of the JSON
``{"v": 1, "k": key id | null, "u": view-as user | null, "e": expiry}`` and of its
HMAC-SHA256 under a random secret kept in ``DATA/ui-session.secret`` (made once, mode
0600, shared by every process and host on the data directory). ``k`` is the id of a
user key (``keys.json``), null for the master key, whose MAC also covers the master
key's hash, so a new master key ends its sessions. A revoked user key ends its sessions
as soon as the key check sees the revocation (``store/keys.py``'s bound).

The cookie counts only for GET and HEAD of the read-only API routes the viewer uses
(``READ_ROUTES``); any other request is authenticated as before (401 without a bearer),
so a cross-site form can forge nothing. ``HttpOnly`` keeps it from scripts,
``SameSite=Strict`` from other sites' requests.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

from ..store.atomic import read_or_create_secret
from ..store.paths import check_name
from .auth import TOKEN_PREFIX, Authenticator, Identity, hash_token
from .errors import Forbidden, Unauthorized
from .keys import CLIENT_SCHEME

__all__ = ["SESSIONS", "COOKIE_NAME", "SECRET_NAME", "READ_ROUTES", "Session", "Sessions", "SessionInvalid"]

SESSIONS: web.AppKey[Sessions] = web.AppKey("SESSIONS")  # set by create_app beside auth.sessions

COOKIE_NAME = "stimserver_session"
SECRET_NAME = "ui-session.secret"
VERSION = 1
_SEG = r"[^/]+"
_T = rf"/v1/repo/{_SEG}/targets/{_SEG}"
# The API routes a session cookie may read (GET/HEAD only); everything else wants a bearer key.
READ_ROUTES = re.compile(
    rf"/v1/repo|/v1/repo/{_SEG}|/v1/repo/{_SEG}/(?:targets|prompts)|/v1/repo/{_SEG}/prompts/{_SEG}|{_T}"
    rf"|{_T}/(?:stim|rollout)(?:/output(?:/search|/sample|/stats)?|/export)?|{_T}/rollout/estimate"
    rf"|/v1/repo/{_SEG}/(?:bakes|tree)|/v1/repo/{_SEG}/bakes/{_SEG}(?:/metrics|/evaluation|/download)?"
    rf"|/v1/repo/{_SEG}/recipe/{_SEG}/(?:dependency-graph|recreation-plan)")
READ_METHODS = frozenset({"GET", "HEAD"})


class SessionInvalid(Unauthorized):
    """A session cookie that is malformed, forged, expired or whose key was revoked."""


@dataclass(frozen=True)
class Session:
    key_id: str | None  # a user key's id; None: the master key
    view_as: str | None  # the user a master session acts as (None: the master user)
    expires: int  # Unix time

    def payload(self) -> dict[str, object]:
        return {"v": VERSION, "k": self.key_id, "u": self.view_as, "e": self.expires}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Signs and checks session cookies for one data directory and one ``Authenticator``."""

    def __init__(self, data_dir: Path, auth: Authenticator, max_age: int) -> None:
        self.secret_path = data_dir / SECRET_NAME
        self.auth = auth
        self.max_age = max_age
        self._secret: bytes | None = None

    def _mac(self, session: Session, payload: str) -> bytes:
        if self._secret is None:  # read (or made) at first use: an app that never signs in touches no file
            self._secret = read_or_create_secret(self.secret_path)
        master = self.auth.master_hash.encode() if session.key_id is None else b""
        return hmac.new(self._secret, b"stimserver-ui-session\0" + master + b"\0" + payload.encode(),
                        hashlib.sha256).digest()

    # -- tokens ------------------------------------------------------------------------
    def sign(self, session: Session) -> str:
        payload = _b64(orjson.dumps(session.payload()))
        return f"{payload}.{_b64(self._mac(session, payload))}"

    def verify(self, token: str, now: float | None = None) -> Session:
        """The session ``token`` holds; ``SessionInvalid`` if it is not one this server signed, still valid."""
        payload, dot, mac = token.partition(".")
        try:
            fields = orjson.loads(_unb64(payload)) if dot else None
            given = _unb64(mac)
        except (ValueError, orjson.JSONDecodeError):
            fields = None
        if not isinstance(fields, dict) or fields.get("v") != VERSION:
            raise SessionInvalid("the session cookie is not valid: sign in again")
        key_id, view_as, expires = fields.get("k"), fields.get("u"), fields.get("e")
        if not (key_id is None or isinstance(key_id, str)) or not (view_as is None or isinstance(view_as, str)) \
                or not isinstance(expires, int):
            raise SessionInvalid("the session cookie is not valid: sign in again")
        session = Session(key_id, view_as, expires)
        if not hmac.compare_digest(given, self._mac(session, payload)):
            raise SessionInvalid("the session cookie is not valid: sign in again")
        if (time.time() if now is None else now) >= expires:
            raise SessionInvalid("the session has expired: sign in again")
        return session

    # -- identities ----------------------------------------------------------------------
    def sign_in(self, key: str, view_as: str | None, now: float | None = None) -> tuple[Session, Identity]:
        """The session of API key ``key`` (acting as ``view_as``, master only); 401/403 like a bearer."""
        key = key.strip()
        if hmac.compare_digest(hash_token(key), self.auth.master_hash):
            key_id = None
        else:
            if self.auth.keystore.user_for(key) is None:
                raise Unauthorized("invalid or revoked API key")
            key_id = key[len(TOKEN_PREFIX):].split("_", 1)[0]
        view = view_as or None
        if view is not None:
            check_name(view, "user", "body")
        expires = int(time.time() if now is None else now) + self.max_age
        session = Session(key_id, view, expires)
        return session, self.identity(session)

    def identity(self, session: Session) -> Identity:
        """Who ``session`` acts as now; ``SessionInvalid`` once its key is revoked, 403 for a user key's view-as."""
        if session.key_id is None:
            master = self.auth.master_user
            return Identity(session.view_as or master, master, True)
        record = self.auth.keystore.file.by_id(session.key_id)
        user = None if record is None or record.get("revoked_at") else record.get("user")
        if not isinstance(user, str):
            raise SessionInvalid("the API key of this session was revoked: sign in with another key")
        if session.view_as not in (None, user):
            raise Forbidden("only the master key may view as another user")
        return Identity(user, user, False)

    def current(self, request: web.Request) -> tuple[Session, Identity]:
        """The request's session and identity; 401 without a (valid) cookie."""
        token = request.cookies.get(COOKIE_NAME)
        if not token:
            raise Unauthorized("not signed in")
        session = self.verify(token)
        return session, self.identity(session)

    def identify(self, request: web.Request) -> Identity | None:
        """The identity of a read-only API request carried by a session cookie, or None (no cookie, or
        a method or route the cookie does not count for). A cookie that counts must be valid, and a
        user override (``X-User-Id``/``user_id``) may only name the session's own user."""
        if request.method not in READ_METHODS or COOKIE_NAME not in request.cookies \
                or READ_ROUTES.fullmatch(request.path) is None:
            return None
        _, identity = self.current(request)
        for name in (request.headers.get("X-User-Id", ""), request.query.get("user_id", "")):
            if name and name != identity.user:
                raise Forbidden("a browser session views the user chosen at sign-in (sign in again to switch)")
        return identity

    # -- cookies ---------------------------------------------------------------------------
    def set_cookie(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        response.set_cookie(COOKIE_NAME, self.sign(session), max_age=self.max_age, path="/", httponly=True,
                            samesite="Strict", secure=_is_https(request))

    @staticmethod
    def clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict", secure=_is_https(request))


def _is_https(request: web.Request) -> bool:
    return request.get(CLIENT_SCHEME, request.scheme) == "https"
