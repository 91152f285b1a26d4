"""Repos over plain HTTP: create/set/get/list/tree, names, paging, races and crash safety."""
from __future__ import annotations

import asyncio
import os
import threading

import pytest

from stimserver.config import Settings
from stimserver.schemas.targets import DEFAULT_BASE_MODEL
from stimserver.web.app import create_app

from ..conftest import MASTER_KEY


@pytest.fixture
def alice(master_headers):
    return {**master_headers, "X-User-Id": "alice"}


async def post_repo(client, headers, **body):
    r = await client.post("/v1/repo", json=body, headers=headers)
    return r.status, await r.json(), r.headers


async def test_create_then_repeat_then_conflict(client, alice):
    status, body, _ = await post_repo(client, alice, repo_name="r1", base_model="m/one")
    assert (status, body) == (201, {"repo_name": "r1", "base_model": "m/one"})
    status, body, _ = await post_repo(client, alice, repo_name="r1", base_model="m/one")
    assert (status, body) == (200, {"repo_name": "r1", "base_model": "m/one"})
    status, body, headers = await post_repo(client, alice, repo_name="r1", base_model="m/two")
    assert status == 409 and body["code"] == "RESOURCE_CONFLICT" and "m/one" in body["message"]
    assert headers["x-should-retry"] == "false"


@pytest.mark.parametrize("body", [{}, {"base_model": None}], ids=["omitted", "null"])
async def test_base_model_defaults_and_is_kept_when_omitted(client, alice, body):
    status, created, _ = await post_repo(client, alice, repo_name="r1", **body)
    assert (status, created["base_model"]) == (201, DEFAULT_BASE_MODEL)
    await post_repo(client, alice, repo_name="r2", base_model="other/model")
    # omitting base_model on an existing repo asks for no change: 200 with the repo as it is
    status, existing, _ = await post_repo(client, alice, repo_name="r2", **body)
    assert (status, existing) == (200, {"repo_name": "r2", "base_model": "other/model"})


async def test_deprecated_put_answers_200_and_still_conflicts(client, alice):
    r = await client.put("/v1/repo", json={"repo_name": "r1"}, headers=alice)
    assert r.status == 200 and await r.json() == {"repo_name": "r1", "base_model": DEFAULT_BASE_MODEL}
    r = await client.put("/v1/repo", json={"repo_name": "r1", "base_model": DEFAULT_BASE_MODEL}, headers=alice)
    assert r.status == 200
    r = await client.put("/v1/repo", json={"repo_name": "r1", "base_model": "x"}, headers=alice)
    assert r.status == 409 and r.headers["x-should-retry"] == "false"


async def test_get_and_tree(client, alice):
    await post_repo(client, alice, repo_name="r1", base_model="m")
    r = await client.get("/v1/repo/r1", headers=alice)
    assert await r.json() == {"repo_name": "r1", "base_model": "m"}
    r = await client.get("/v1/repo/r1/tree", headers=alice)
    assert r.status == 200 and await r.json() == {"base_model": "m", "bakes": {}, "edges": []}
    for path in ("/v1/repo/nope", "/v1/repo/nope/tree"):
        r = await client.get(path, headers=alice)
        assert r.status == 404 and (await r.json())["code"] == "RESOURCE_NOT_FOUND"


@pytest.mark.parametrize("name, fragment", [
    ("a/b", "invalid character"),
    ("..", "not allowed"),
    ("batch", "reserved"),
    ("", "empty"),
    ("x" * 129, "longer"),
    (".hidden", "start with"),
    ("sp ace", "invalid character"),
    (5, "string"),
], ids=["slash", "dotdot", "reserved", "empty", "too-long", "leading-dot", "space", "not-a-string"])
async def test_bad_repo_names_are_422(client, alice, name, fragment):
    status, body, _ = await post_repo(client, alice, repo_name=name)
    assert status == 422 and body["code"] == "VALIDATION_ERROR"
    assert fragment in body["message"]
    assert body["detail"][0]["loc"] == ["body", "repo_name"]


async def test_plain_list_is_sorted_names(client, alice):
    for name in ("zeta", "alpha", "Mid", "beta"):
        await post_repo(client, alice, repo_name=name)
    r = await client.get("/v1/repo", headers=alice)
    assert await r.json() == {"repos": ["Mid", "alpha", "beta", "zeta"]}


@pytest.mark.parametrize("query, names, limit, has_more", [
    ("", ["r0", "r1", "r2", "r3", "r4"], 5, False),
    ("&limit=2", ["r0", "r1"], 2, True),
    ("&offset=2&limit=2", ["r2", "r3"], 2, True),
    ("&offset=4&limit=2", ["r4"], 2, False),
    ("&offset=3", ["r3", "r4"], 2, False),
    ("&offset=9", [], 1, False),
], ids=["all", "first-page", "middle-page", "last-page", "offset-only", "past-the-end"])
async def test_paginated_list(client, alice, query, names, limit, has_more):
    for i in range(5):
        await post_repo(client, alice, repo_name=f"r{i}", base_model=f"m{i}")
    r = await client.get(f"/v1/repo?include_metadata=true{query}", headers=alice)
    body = await r.json()
    assert body == {"repos": [{"repo_name": n, "base_model": "m" + n[1:]} for n in names],
                    "offset": int(query.split("offset=")[1].split("&")[0]) if "offset=" in query else 0,
                    "limit": limit, "has_more": has_more, "total": 5}


async def test_offset_and_limit_only_apply_with_metadata(client, alice):
    for i in range(3):
        await post_repo(client, alice, repo_name=f"r{i}")
    r = await client.get("/v1/repo?include_metadata=false&limit=1&offset=1", headers=alice)
    assert await r.json() == {"repos": ["r0", "r1", "r2"]}


async def test_limit_is_clamped_by_max_page_size(aiohttp_client, tmp_path, alice):
    client = await aiohttp_client(create_app(Settings.build(data_dir=tmp_path / "d", master_key=MASTER_KEY,
                                                            access_log=False, max_page_size=2,
                                                            default_page_size=2)))
    for i in range(3):
        await post_repo(client, alice, repo_name=f"r{i}")
    r = await client.get("/v1/repo?include_metadata=true&limit=50", headers=alice)
    body = await r.json()
    assert (len(body["repos"]), body["limit"], body["has_more"], body["total"]) == (2, 2, True, 3)


@pytest.mark.parametrize("query, field", [
    ("include_metadata=maybe", "include_metadata"),
    ("include_metadata=true&offset=-1", "offset"),
    ("include_metadata=true&limit=0", "limit"),
    ("include_metadata=true&limit=ten", "limit"),
], ids=["bad-bool", "negative-offset", "zero-limit", "text-limit"])
async def test_bad_list_query_is_422(client, alice, query, field):
    r = await client.get(f"/v1/repo?{query}", headers=alice)
    body = await r.json()
    assert r.status == 422 and body["detail"][0]["loc"] == ["query", field]


@pytest.mark.parametrize("models, statuses", [
    (["m"] * 8, {201: 1, 200: 7}),
    ([f"m{i}" for i in range(8)], {201: 1, 409: 7}),
], ids=["same-model", "different-models"])
async def test_racing_creates_make_one_repo(client, alice, records, models, statuses):
    results = await asyncio.gather(*(post_repo(client, alice, repo_name="race", base_model=m) for m in models))
    counted: dict[int, int] = {}
    for status, _, _ in results:
        counted[status] = counted.get(status, 0) + 1
    assert counted == statuses
    assert records.repo_names("alice") == ["race"]


def test_racing_threads_create_exactly_once(records):
    barrier = threading.Barrier(8)
    outcomes: list[bool] = []

    def create(i: int) -> None:
        barrier.wait()
        outcomes.append(records.create_repo("bob", "race", f"m{i}")[1])

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    winner = records.repo("bob", "race")
    assert winner["base_model"] in {f"m{i}" for i in range(8)}


async def test_crash_mid_write_leaves_no_record(client, alice, records, monkeypatch):
    real_link = os.link

    def crash(src, dst, *a, **k):
        raise OSError(28, "No space left on device")  # the write dies between temp file and rename

    monkeypatch.setattr(os, "link", crash)
    status, body, _ = await post_repo(client, alice, repo_name="r1")
    assert status == 507 and body["code"] == "INSUFFICIENT_STORAGE"  # a full disk is the user's 507, not a 500
    monkeypatch.setattr(os, "link", real_link)
    folder = records.paths.repo("alice", "r1")
    assert not (folder / "repo.json").exists() and list(folder.iterdir()) == []
    # a half-written temp file from a real crash is invisible, and creating again works
    (folder / ".repo.json.tmp-deadbeef").write_bytes(b'{"repo_na')
    assert (await (await client.get("/v1/repo", headers=alice)).json()) == {"repos": []}
    status, _, _ = await post_repo(client, alice, repo_name="r1")
    assert status == 201


@pytest.mark.parametrize("offset", ["57250484562325512192", "9223372036854775808", "1" + "0" * 5000])
async def test_an_offset_beyond_64_bits_is_a_422_not_a_500(client, alice, offset):
    """Fuzzer finding: the offset was echoed into the reply and orjson refused to serialise it."""
    await post_repo(client, alice, repo_name="r1")
    r = await client.get(f"/v1/repo?include_metadata=true&offset={offset}", headers=alice)
    body = await r.json()
    assert r.status == 422 and body["detail"][0]["loc"] == ["query", "offset"], body
    assert "at most 9223372036854775807" in body["message"]
    r = await client.get("/v1/repo?include_metadata=true&offset=9223372036854775807", headers=alice)
    assert r.status == 200 and (await r.json())["repos"] == []
