"""Signed checkpoint downloads: the link works with no key; expired, changed, foreign or stale links do not."""
from __future__ import annotations

import io
import re
import tarfile
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import aibread
import httpx
import pytest

from stimserver.store import bakefiles
from stimserver.store.bakes import ARCHIVES, SECRET_NAME, BakeStore
from stimserver.store.records import Records
from stimserver.web.app import create_app

from .test_bakes import ARCHIVED, CHECKPOINT_FILES, FRENCH, add_checkpoint, fake_bake_job, prepare, token

AUTH_FREE = {"Accept": "*/*"}


@pytest.fixture
def bread(settings):
    from tests.aibread_server import ServerThread

    server = ServerThread(replace(settings, run_jobs=False)).start()
    yield server
    server.stop()


@pytest.fixture
def alice(bread, user_key, paths):
    client = bread.client(token(user_key("alice")), _strict_response_validation=True)
    prepare(client)
    client.bakes.create("r1", bake_name="b1", template="default", overrides=FRENCH)
    fake_bake_job(paths, "alice", "r1", "b1")
    return client


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}


def test_link_works_without_a_key_and_holds_the_adapter(alice, paths):
    link = alice.bakes.download("b1", repo_name="r1")
    r = httpx.get(link.url, headers=AUTH_FREE)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/gzip"
    assert r.headers["content-disposition"] == 'attachment; filename="r1-b1-4.tar.gz"'
    got = members(r.content)
    assert sorted(got) == ["r1-b1-4", *(f"r1-b1-4/{n}" for n in ARCHIVED)]  # no optimizer, scheduler, rng, ...
    for name in ARCHIVED:
        assert got[f"r1-b1-4/{name}"] == CHECKPOINT_FILES[name] + b"4"
    # made once, kept beside the checkpoints, the same bytes every time
    job_dir = paths.job_dir("alice", "r1", "b1", "bake")
    assert (job_dir / ARCHIVES / "4.tar.gz").read_bytes() == r.content
    assert httpx.get(link.url).content == r.content
    head = httpx.head(link.url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(r.content)
    older = httpx.get(alice.bakes.download("b1", repo_name="r1", checkpoint=2).url)
    assert older.status_code == 200
    assert members(older.content)["r1-b1-2/README.md"] == CHECKPOINT_FILES["README.md"] + b"2"


def _parts(url: str) -> tuple[str, dict[str, str]]:
    split = urlsplit(url)
    return split.path, {k: v[0] for k, v in parse_qs(split.query).items()}


def _url(bread, path: str, query: dict[str, str]) -> str:
    return bread.base_url + path + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def _refused(url: str, status: int, words: str) -> None:
    r = httpx.get(url)
    assert r.status_code == status, r.text
    body = r.json()
    assert r.headers["content-type"].startswith("application/json") and set(body) == {"message", "code"}
    assert re.search(words, body["message"]), body["message"]


def test_changed_links_are_refused(bread, alice, user_key):
    path, query = _parts(alice.bakes.download("b1", repo_name="r1").url)
    assert set(query) == {"job", "expires", "signature"}
    changed = [
        (path.replace("/4", "/2"), query),
        (path.replace("/b1/", "/b2/"), query),
        (path.replace("/alice/", "/bob/"), query),  # another user's bake by the same names
        (path.replace("/r1/", "/r2/"), query),
        (path, {**query, "expires": str(int(query["expires"]) + 3600)}),
        (path, {**query, "job": "8"}),
        (path, {**query, "signature": query["signature"][:-2] + ("AA" if query["signature"][-2:] != "AA" else "BB")}),
    ]
    for p, q in changed:
        _refused(_url(bread, p, q), 403, "signature does not match")
    for p, q in [(path, {k: v for k, v in query.items() if k != "signature"}), (path, {**query, "job": "x"}),
                 (path.replace("/4", "/four"), query), (path.replace("/b1/", "/b%2E/"), query),
                 (path, {**query, "expires": "9" * 40})]:
        _refused(_url(bread, p, q), 403, "not a valid download link")
    # a bearer key does not make a bad link good
    key = {"Authorization": f"Bearer {token(user_key('alice'))}"}
    r = httpx.get(_url(bread, path, {**query, "job": "8"}), headers=key)
    assert r.status_code == 403


def test_expired_links_are_refused(bread, alice, paths):
    from stimserver.handlers.downloads import signature

    secret = BakeStore(Records(paths)).download_secret()
    past = int(time.time()) - 1
    query = {"job": "7", "expires": str(past), "signature": signature(secret, "alice", "r1", "b1", 4, 7, past)}
    _refused(_url(bread, "/v1/downloads/bakes/alice/r1/b1/4", query), 403, "expired")
    link = alice.bakes.download("b1", repo_name="r1", expires_in=1)
    assert httpx.get(link.url).status_code == 200
    time.sleep(1.1)
    _refused(link.url, 403, "expired")


def test_gone_bakes_and_checkpoints_are_404(bread, alice, paths):
    link = alice.bakes.download("b1", repo_name="r1", checkpoint=2)
    old = alice.bakes.download("b1", repo_name="r1")
    job_dir = paths.job_dir("alice", "r1", "b1", "bake")
    import shutil

    shutil.rmtree(bakefiles.checkpoint_dir(job_dir, 2))
    _refused(link.url, 404, "no checkpoint 2")
    alice.bakes.delete("b1", repo_name="r1")
    _refused(old.url, 404, "no longer exists")
    # the same names again, another job: an old link does not reach the new bake's model
    alice.bakes.create("r1", bake_name="b1", template="default", overrides=FRENCH)
    fake_bake_job(paths, "alice", "r1", "b1", job_id=9)
    _refused(old.url, 404, "no longer exists")
    assert httpx.get(alice.bakes.download("b1", repo_name="r1").url).status_code == 200


def test_a_new_secret_revokes_every_link(bread, alice, paths):
    link = alice.bakes.download("b1", repo_name="r1")
    secret = paths.root / SECRET_NAME
    assert secret.stat().st_mode & 0o777 == 0o600
    secret.unlink()
    _refused(link.url, 403, "signature does not match")
    assert httpx.get(alice.bakes.download("b1", repo_name="r1").url).status_code == 200


def test_a_republished_checkpoint_gets_a_new_archive(alice, paths):
    job_dir = paths.job_dir("alice", "r1", "b1", "bake")
    first = httpx.get(alice.bakes.download("b1", repo_name="r1").url).content
    import shutil

    shutil.rmtree(bakefiles.checkpoint_dir(job_dir, 4))
    time.sleep(0.01)
    folder = add_checkpoint(job_dir, 4)
    (folder / "README.md").write_bytes(b"rewritten")
    (folder / bakefiles.CHECKPOINT_INFO).touch()
    again = httpx.get(alice.bakes.download("b1", repo_name="r1").url).content
    assert again != first and members(again)["r1-b1-4/README.md"] == b"rewritten"


async def test_links_point_at_the_server_as_the_client_reached_it(aiohttp_client, settings, paths, master_headers):
    from tests.handlers.test_bakes import setup_repo

    trusted = await aiohttp_client(create_app(replace(settings, run_jobs=False, trusted_proxies="127.0.0.1/32")))
    alice = {**master_headers, "X-User-Id": "alice"}
    await setup_repo(trusted, alice)
    assert (await trusted.post("/v1/repo/r1/bakes", json={"bake_name": "b1", "template": "default",
                                                          "overrides": FRENCH}, headers=alice)).status == 201
    fake_bake_job(paths, "alice", "r1", "b1")

    async def url(headers):
        r = await trusted.get("/v1/repo/r1/bakes/b1/download", headers={**alice, **headers})
        assert r.status == 200
        return (await r.json())["url"]

    assert (await url({"Host": "stim.example:8443"})).startswith("http://stim.example:8443/v1/downloads/bakes/")
    forwarded = await url({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "models.example.org",
                           "X-Forwarded-For": "10.0.0.7"})
    assert forwarded.startswith("https://models.example.org/v1/downloads/bakes/alice/r1/b1/4?job=7&expires=")
    bad_host = await url({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil/path"})
    assert urlsplit(bad_host).netloc == urlsplit(str(trusted.make_url("/"))).netloc

    untrusted = await aiohttp_client(create_app(replace(settings, run_jobs=False)))  # no trusted proxy
    r = await untrusted.get("/v1/repo/r1/bakes/b1/download", headers={
        **alice, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "models.example.org"})
    assert (await r.json())["url"].startswith(str(untrusted.make_url("/v1/downloads/bakes/")))


def test_download_route_is_public_but_nothing_else_is(bread, alice):
    for path in ("/v1/downloads/bakes/alice/r1/b1/4", "/v1/downloads/anything"):
        r = httpx.get(bread.base_url + path)
        assert r.status_code in (403, 404) and r.headers["content-type"].startswith("application/json")
    assert httpx.get(bread.base_url + "/v1/repo/r1/bakes/b1/download").status_code == 401
    with pytest.raises(aibread.AuthenticationError):
        bread.client("wrong").bakes.download("b1", repo_name="r1")
