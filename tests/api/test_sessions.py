"""Viewer sessions: the signed cookie (sessions.py) and where it counts, through the real middleware."""
from __future__ import annotations

import os
import stat
import time
from dataclasses import replace

import pytest

from stimserver.api.auth import Authenticator, KeyStore
from stimserver.api.errors import Forbidden, Unauthorized
from stimserver.api.sessions import COOKIE_NAME, SECRET_NAME, Session, SessionInvalid, Sessions
from stimserver.web.app import create_app
from tests.conftest import MASTER_KEY

OUTPUT = "/v1/repo/repo1/targets/t1/stim/output"


@pytest.fixture
def sessions(settings, records) -> Sessions:
    auth = Authenticator(MASTER_KEY, "admin", KeyStore(records.paths.keys_file))
    return Sessions(settings.data_dir, auth, 3600)


def user_token(records, user="alice") -> tuple[str, str]:
    record, token = KeyStore(records.paths.keys_file).create(user)
    return record["id"], token


# -- tokens ----------------------------------------------------------------------------------------------
def test_a_signed_session_verifies_and_holds_no_key(sessions, records):
    key_id, token = user_token(records)
    session, identity = sessions.sign_in(token, None)
    cookie = sessions.sign(session)
    assert sessions.verify(cookie) == session == Session(key_id, None, session.expires)
    assert identity.user == identity.key_user == "alice" and not identity.is_master
    assert token not in cookie and token.split("_")[-1] not in cookie


def test_the_secret_is_made_once_mode_0600_and_shared(sessions, settings, records):
    session, _ = sessions.sign_in(MASTER_KEY, "bob")
    cookie = sessions.sign(session)
    path = settings.data_dir / SECRET_NAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    other = Sessions(settings.data_dir, sessions.auth, 3600)  # another process on the same data directory
    assert other.verify(cookie) == session
    assert path.read_bytes() == other.secret_path.read_bytes()


TAMPERED = {
    "empty": lambda c: "",
    "no-mac": lambda c: c.split(".")[0],
    "other-mac": lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),
    "payload-changed": lambda c: c.replace(c.split(".")[0], c.split(".")[0][:-2] + "xx"),
    "garbage": lambda c: "!!!.???",
}


@pytest.mark.parametrize("change", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_changed_cookie_is_refused(sessions, change):
    session, _ = sessions.sign_in(MASTER_KEY, None)
    with pytest.raises(SessionInvalid):
        sessions.verify(change(sessions.sign(session)))


def test_a_view_as_cannot_be_edited_into_a_cookie(sessions):
    """The view-as user is under the MAC: a master session for bob is not one for carol."""
    import base64

    import orjson

    session, _ = sessions.sign_in(MASTER_KEY, "bob")
    payload, mac = sessions.sign(session).split(".")
    forged = base64.urlsafe_b64encode(orjson.dumps({**session.payload(), "u": "carol"})).rstrip(b"=").decode()
    with pytest.raises(SessionInvalid):
        sessions.verify(f"{forged}.{mac}")


def test_expiry(sessions):
    session, _ = sessions.sign_in(MASTER_KEY, None, now=1_000_000)
    cookie = sessions.sign(session)
    assert session.expires == 1_000_000 + 3600
    assert sessions.verify(cookie, now=1_000_000 + 3599) == session
    with pytest.raises(SessionInvalid, match="expired"):
        sessions.verify(cookie, now=1_000_000 + 3600)


def test_revoking_the_key_ends_its_sessions(sessions, records):
    key_id, token = user_token(records)
    session, _ = sessions.sign_in(token, None)
    assert sessions.identity(sessions.verify(sessions.sign(session))).user == "alice"
    KeyStore(records.paths.keys_file).revoke(key_id)
    sessions.auth.keystore.file.recheck_seconds = 0  # the cross-process bound is store/keys.py's to test
    with pytest.raises(SessionInvalid, match="revoked"):
        sessions.identity(session)
    with pytest.raises(Unauthorized):
        sessions.sign_in(token, None)


def test_a_new_master_key_ends_master_sessions(sessions, settings, records):
    session, _ = sessions.sign_in(MASTER_KEY, "bob")
    cookie = sessions.sign(session)
    rotated = Sessions(settings.data_dir, Authenticator("another-master-key-0123456789", "admin",
                                                        KeyStore(records.paths.keys_file)), 3600)
    with pytest.raises(SessionInvalid):
        rotated.verify(cookie)


def test_view_as_is_for_the_master_key_only(sessions, records):
    _, identity = sessions.sign_in(MASTER_KEY, "bob")
    assert (identity.user, identity.key_user, identity.is_master) == ("bob", "admin", True)
    _, identity = sessions.sign_in(MASTER_KEY, None)
    assert identity.user == "admin"
    _, token = user_token(records)
    with pytest.raises(Forbidden):
        sessions.sign_in(token, "bob")
    assert sessions.sign_in(token, "alice")[1].user == "alice"  # naming oneself is fine
    with pytest.raises(Unauthorized):
        sessions.sign_in("ssk_nope_nope", None)


# -- over HTTP -------------------------------------------------------------------------------------------
async def sign_in(client, key, user=None):
    body = {"key": key} if user is None else {"key": key, "user": user}
    r = await client.post("/ui/session", json=body)
    return r, await r.json()


@pytest.fixture
async def alice_cookie(client, make_job, records):
    make_job(lines=3, user="alice")
    _, token = user_token(records)
    r, body = await sign_in(client, token)
    assert r.status == 200 and body["user"] == "alice"
    return r.cookies[COOKIE_NAME].value


async def test_sign_in_sets_a_strict_httponly_cookie(client, records):
    _, token = user_token(records)
    r, body = await sign_in(client, token)
    header = r.headers["Set-Cookie"]
    assert header.startswith(COOKIE_NAME + "=")
    for part in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"):
        assert part in header
    assert "Secure" not in header  # plain http on localhost; behind https (X-Forwarded-Proto) it is set
    assert token not in header and token not in str(body)
    assert body == {"signed_in": True, "user": "alice", "key_user": "alice", "is_master": False,
                    "expires_at": body["expires_at"], "expires_in": 43200}


async def test_the_cookie_reads_the_ui_routes(client, alice_cookie):
    cookies = {COOKIE_NAME: alice_cookie}
    for path in ("/v1/repo", "/v1/repo/repo1", "/v1/repo/repo1/targets", "/v1/repo/repo1/targets/t1",
                 "/v1/repo/repo1/targets/t1/stim", OUTPUT, OUTPUT + "/search?q=Question", OUTPUT + "/sample",
                 OUTPUT + "/stats", "/v1/repo/repo1/targets/t1/stim/export", "/ui/session"):
        r = await client.get(path, cookies=cookies)
        assert r.status == 200, (path, await r.text())
    r = await client.get(OUTPUT, cookies=cookies)
    assert len((await r.json())["output"]) == 3


WRITES = {
    "run-stim": ("POST", "/v1/repo/repo1/targets/t1/stim"),
    "discard-output": ("DELETE", "/v1/repo/repo1/targets/t1/stim/output"),
    "create-repo": ("POST", "/v1/repo"),
    "put-target": ("PUT", "/v1/repo/repo1/targets/t1"),
    "delete-target": ("DELETE", "/v1/repo/repo1/targets/t1"),
}


@pytest.mark.parametrize("method,path", WRITES.values(), ids=WRITES.keys())
async def test_the_cookie_is_refused_for_writes(client, alice_cookie, records, method, path):
    r = await client.request(method, path, cookies={COOKIE_NAME: alice_cookie}, json={"repo_name": "x"})
    assert r.status == 401
    body = await r.json()
    assert body["code"] == "UNAUTHORIZED" and "Authorization" in body["message"]
    assert records.target("alice", "repo1", "t1") is not None and records.repo("alice", "x") is None


async def test_the_cookie_is_refused_on_routes_the_viewer_does_not_read(client, alice_cookie):
    for path in ("/v1/repo/repo1/targets/t1/answers", "/v1/repo/repo1/bakes/b1/archive"):  # no such read
        r = await client.get(path, cookies={COOKIE_NAME: alice_cookie})
        assert r.status == 401


async def test_a_session_cannot_switch_user_by_header(client, alice_cookie):
    r = await client.get(OUTPUT, cookies={COOKIE_NAME: alice_cookie}, headers={"X-User-Id": "bob"})
    assert r.status == 403
    r = await client.get(OUTPUT + "?user_id=alice", cookies={COOKIE_NAME: alice_cookie})
    assert r.status == 200


async def test_a_master_session_views_as_the_chosen_user(client, make_job):
    make_job(lines=2, user="bob")
    r, body = await sign_in(client, MASTER_KEY, "bob")
    assert body["user"] == "bob" and body["is_master"] and body["users"] == ["bob"]
    r = await client.get(OUTPUT, cookies={COOKIE_NAME: r.cookies[COOKIE_NAME].value})
    assert r.status == 200 and len((await r.json())["output"]) == 2


async def test_a_bad_or_expired_cookie_is_a_401(aiohttp_client, settings, make_job, records):
    client = await aiohttp_client(create_app(replace(settings, ui_session_seconds=60)))
    make_job(lines=1, user="alice")
    _, token = user_token(records)
    r, _ = await sign_in(client, token)
    cookie = r.cookies[COOKIE_NAME].value
    r = await client.get(OUTPUT, cookies={COOKIE_NAME: cookie[:-3] + "abc"})
    assert r.status == 401 and "sign in again" in (await r.json())["message"]
    sessions = Sessions(settings.data_dir, Authenticator(MASTER_KEY, "admin", KeyStore(records.paths.keys_file)), 60)
    old = sessions.sign(Session(sessions.verify(cookie).key_id, None, int(time.time()) - 1))
    r = await client.get(OUTPUT, cookies={COOKIE_NAME: old})
    assert r.status == 401 and "expired" in (await r.json())["message"]


BAD_SIGN_INS = {
    "wrong-key": ({"key": "ssk_0123_nope"}, 401),
    "no-key": ({}, 422),
    "empty-key": ({"key": "  "}, 422),
    "key-not-text": ({"key": 5}, 422),
    "user-not-text": ({"key": MASTER_KEY, "user": ["bob"]}, 422),
    "bad-user-name": ({"key": MASTER_KEY, "user": "../etc"}, 422),
}


@pytest.mark.parametrize("body,status", BAD_SIGN_INS.values(), ids=BAD_SIGN_INS.keys())
async def test_bad_sign_ins_are_4xx_and_echo_no_key(client, body, status):
    r = await client.post("/ui/session", json=body)
    assert r.status == status
    text = await r.text()
    assert "code" in await r.json() and "Set-Cookie" not in r.headers
    if isinstance(body.get("key"), str) and body["key"].strip():
        assert body["key"] not in text


async def test_sign_in_wants_json_from_the_same_origin(client):
    r = await client.post("/ui/session", data={"key": MASTER_KEY})  # a plain HTML form post
    assert r.status == 400 and "Set-Cookie" not in r.headers
    r = await client.post("/ui/session", json={"key": MASTER_KEY}, headers={"Origin": "https://evil.example"})
    assert r.status == 403 and "Set-Cookie" not in r.headers
    r = await client.post("/ui/session", json={"key": MASTER_KEY}, headers={"Origin": "https://127.0.0.1:8443"})
    assert r.status == 200  # the same host behind a proxy that forwards Host without its port


async def test_sign_out_clears_the_cookie(client, alice_cookie):
    r = await client.delete("/ui/session", cookies={COOKIE_NAME: alice_cookie})
    assert r.status == 200
    header = r.headers["Set-Cookie"]
    assert header.startswith(f'{COOKIE_NAME}=""') and "Max-Age=0" in header
    r = await client.get("/ui/session")
    assert r.status == 401
