"""The page answered before the router (fastpage.py): the ordinary path's answer, for the plain case only.

Each request goes to two apps on one data directory — the app as served, and the same app
with its page path switched off — and both answers are compared: the same status, the same
body bytes, the same headers (but the request id and the date, which differ by design).
Whether the page path answered is recorded, so a test cannot pass by never taking it.
"""
from __future__ import annotations

import logging

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from stimserver.api.auth import KeyStore
from stimserver.config import Settings
from stimserver.store import jobrecords as jr
from stimserver.web.app import create_app
from stimserver.web.fastpage import PageApplication
from stimserver.web.logs import JsonAccessLogger, flush_access_log
from tests.web.test_logs import Recorder

BASE = "/v1/repo/repo1/targets/t1/stim/output"
VARYING = {"x-request-id", "date"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    from tests.conftest import MASTER_KEY

    return Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False, run_jobs=False)


class Taken:
    """Records what the page path answered: True (it answered) or False (it left it to the router)."""

    def __init__(self) -> None:
        self.answers: list[bool] = []

    async def on_startup(self, app: web.Application) -> None:
        assert isinstance(app, PageApplication) and app.fast_page is not None
        answer = app.fast_page.answer

        def counted(request: web.Request, app_: web.Application) -> web.StreamResponse | None:
            response = answer(request, app_)
            self.answers.append(response is not None)
            return response

        app.fast_page.answer = counted  # type: ignore[method-assign]  # a spy on this one app

    def last(self) -> bool | None:
        return self.answers.pop() if self.answers else None


@pytest.fixture
async def both(aiohttp_client, settings):
    """(taken, fast client, ordinary client): one data directory, the page path on and off."""
    taken = Taken()
    fast_app = create_app(settings)
    fast_app.on_startup.append(taken.on_startup)
    plain_app = create_app(settings)

    async def off(app: web.Application) -> None:
        assert isinstance(app, PageApplication)
        app.fast_page = None

    plain_app.on_startup.append(off)
    return taken, await aiohttp_client(fast_app), await aiohttp_client(plain_app)


async def compare(both, method: str, url: str | URL, headers: dict[str, str]) -> tuple[bool | None, int, bytes]:
    """Send to both apps; assert the answers agree; returns (page path answered, status, body)."""
    taken, fast, plain = both
    r1 = await fast.request(method, url, headers=headers)
    body1 = await r1.read()
    answered = taken.last()
    r2 = await plain.request(method, url, headers=headers)
    body2 = await r2.read()
    assert r1.status == r2.status
    if r1.status < 400:
        assert body1 == body2
    else:  # an error body may name a request id; the rest must agree
        assert {k: v for k, v in orjson.loads(body1).items() if k != "request_id"} == \
               {k: v for k, v in orjson.loads(body2).items() if k != "request_id"}
    assert [(k, v) for k, v in r1.headers.items() if k.lower() not in VARYING] == \
           [(k, v) for k, v in r2.headers.items() if k.lower() not in VARYING]
    assert [k for k in r1.headers if k.lower() in VARYING] == [k for k in r2.headers if k.lower() in VARYING]
    return answered, r1.status, body1


@pytest.mark.parametrize("query", ["", "?", "?offset=3", "?limit=7", "?offset=3&limit=7", "?limit=7&offset=3",
                                   "?offset=19&limit=5", "?offset=20&limit=5", "?offset=999&limit=1",
                                   "?offset=007&limit=0010", "?limit=1000"])
async def test_a_plain_page_is_answered_before_the_router_with_the_same_bytes(both, make_job, user_key, query):
    make_job(lines=20)
    answered, status, _ = await compare(both, "GET", BASE + query, user_key("alice"))
    assert answered is True and status == 200


async def test_the_master_key_naming_nobody_is_plain_too(both, make_job, master_headers, settings):
    make_job(lines=5, user=settings.master_user)
    answered, status, body = await compare(both, "GET", BASE + "?limit=2", master_headers)
    assert answered is True and status == 200 and orjson.loads(body)["lines"] == 5


@pytest.mark.parametrize("method, url, extra", [
    ("HEAD", BASE, {}),
    ("GET", BASE, {"X-User-Id": "alice"}),
    ("GET", BASE + "?user_id=alice", {}),
    ("GET", BASE + "?user_id=bob", {}),
    ("GET", BASE, {"X-User-Id": "bob"}),
    ("GET", BASE + "?limit=0", {}),
    ("GET", BASE + "?limit=1001", {}),
    ("GET", BASE + "?limit=", {}),
    ("GET", BASE + "?limit=abc", {}),
    ("GET", BASE + "?offset=-1", {}),
    ("GET", BASE + "?offset=-0", {}),
    ("GET", BASE + "?offset=%201", {}),
    ("GET", BASE + "?offset=1&offset=2", {}),
    ("GET", BASE + "?offset=1&foo=2", {}),
    ("GET", BASE + "?offset", {}),
    ("GET", BASE + "?offset=" + "1" * 21, {}),
    ("GET", URL("/v1/repo/repo%31/targets/t1/stim/output", encoded=True), {}),
    ("GET", "/v1/repo/repo1/targets/t1/nosuchkind/output", {}),
    ("GET", "/v1/repo/repo1/targets/nosuch/stim/output", {}),
    ("GET", "/v1/repo/nosuch/targets/t1/stim/output", {}),
    ("GET", "/v1/repo/.hidden/targets/t1/stim/output", {}),
    ("GET", "/v1/repo/" + "r" * 129 + "/targets/t1/stim/output", {}),
    ("GET", BASE + "/", {}),
    ("GET", BASE, {"Expect": "100-continue"}),
])
async def test_anything_not_plain_goes_the_ordinary_way(both, make_job, user_key, method, url, extra):
    make_job(lines=20)
    answered, _, _ = await compare(both, method, url, {**user_key("alice"), **extra})
    assert answered is not True


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Basic abc", "Bearer ssk_000000000000_nope",
                                           "Bearer wrong-master-key", "Bearer a b"])
async def test_a_refused_key_goes_the_ordinary_way_and_gets_its_401(both, make_job, authorization):
    make_job(lines=3)
    headers = {} if authorization is None else {"Authorization": authorization}
    answered, status, body = await compare(both, "GET", BASE, headers)
    assert answered is False and status == 401 and orjson.loads(body)["code"] == "UNAUTHORIZED"


async def test_a_job_that_is_not_complete_goes_the_ordinary_way(both, make_job, user_key, records):
    make_job(lines=4)
    job = records.job("alice", "repo1", "t1", "stim")
    assert job is not None
    records.write_job("alice", "repo1", "t1", "stim", {**job, "status": jr.JobStatus.FAILED.value, "error": "x"})
    answered, status, body = await compare(both, "GET", BASE, user_key("alice"))
    assert answered is False and status == 200 and orjson.loads(body)["status"] == "failed"


async def test_a_revoked_key_is_refused_by_the_page_path(both, make_job, records):
    from stimserver.store.keys import RECHECK_SECONDS

    make_job(lines=3)
    store = KeyStore(records.paths.keys_file)  # as another process
    rec, token = store.create("alice")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await compare(both, "GET", BASE, headers))[:2] == (True, 200)
    store.revoke(rec["id"])
    import asyncio

    await asyncio.sleep(RECHECK_SECONDS + 0.1)
    answered, status, body = await compare(both, "GET", BASE, headers)
    assert answered is False and status == 401 and token.encode() not in body


async def test_an_incoming_request_id_is_echoed_and_a_made_one_is_fresh(both, make_job, user_key):
    make_job(lines=3)
    taken, fast, _ = both
    headers = user_key("alice")
    r = await fast.get(BASE, headers={**headers, "X-Request-Id": "from-nginx-1"})
    assert r.headers["X-Request-Id"] == "from-nginx-1" and taken.last() is True
    ids = set()
    for _ in range(20):
        r = await fast.get(BASE, headers=headers)
        ids.add(r.headers["X-Request-Id"])
        assert taken.last() is True
    assert len(ids) == 20


async def test_each_page_path_answer_is_counted_in_the_metrics(both, make_job, user_key):
    from prometheus_client.parser import text_string_to_metric_families

    make_job(lines=3)
    taken, fast, _ = both

    async def counts() -> tuple[float, float]:
        text = await (await fast.get("/metrics")).text()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        route = "/v1/repo/{repo_name}/targets/{target_name}/stim/output"
        total = samples.get(("stimserver_http_requests_total",
                             (("method", "GET"), ("route", route), ("status", "200"))), 0.0)
        hist = samples.get(("stimserver_http_request_duration_seconds_count",
                            (("method", "GET"), ("route", route))), 0.0)
        return total, hist

    before = await counts()
    taken.answers.clear()
    for _ in range(7):
        assert (await fast.get(BASE, headers=user_key("alice"))).status == 200
    assert taken.answers == [True] * 7
    after = await counts()
    assert (after[0] - before[0], after[1] - before[1]) == (7, 7)


async def test_one_access_log_line_per_answer_the_same_as_the_ordinary_one(aiohttp_client, settings, make_job,
                                                                          user_key, monkeypatch):
    make_job(lines=3)
    stream = Recorder()
    monkeypatch.setattr(JsonAccessLogger, "stream", stream)
    taken = Taken()
    lines = []
    for page_path in (True, False):
        app = create_app(settings)
        if page_path:
            app.on_startup.append(taken.on_startup)
        else:
            async def off(app: web.Application) -> None:
                assert isinstance(app, PageApplication)
                app.fast_page = None
            app.on_startup.append(off)
        server = TestServer(app)  # started here: aiohttp_client would not pass the access-log options on
        await server.start_server(access_log_class=JsonAccessLogger, access_log=logging.getLogger("aiohttp.access"))
        client = await aiohttp_client(server)
        for _ in range(3):
            assert (await client.get(BASE + "?limit=2", headers=user_key("alice"))).status == 200
        await client.close()
        flush_access_log()
        lines.append([orjson.loads(line) for line in stream.getvalue().splitlines()])
        stream.seek(0)
        stream.truncate()
    assert taken.answers == [True] * 3
    fast, plain = lines
    assert len(fast) == len(plain) == 3 and len({line["request_id"] for line in fast}) == 3
    varying = {"ts", "request_id", "duration_ms", "remote"}
    assert [{k: v for k, v in line.items() if k not in varying} for line in fast] == \
           [{k: v for k, v in line.items() if k not in varying} for line in plain]
    assert fast[0]["route"] == "/v1/repo/{repo_name}/targets/{target_name}/stim/output" and fast[0]["user"] == "alice"


async def test_a_rollout_page_is_answered_before_the_router_with_its_own_fields(both, make_job, user_key, records,
                                                                                 tmp_path):
    """Rollout pages take the page path too, with ``total_expected``/``stim_outdated`` as the ordinary path
    makes them — also after the stim job changed under a complete rollout (those fields are never cached)."""
    from tests.conftest import import_jsonl

    make_job(lines=3)
    src = tmp_path / "rollout.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"stimulus_id": i // 2, "trajectory_id": i % 2, "response": None,
                                           "error": "x"}) + b"\n" for i in range(6)))
    import_jsonl(records, "alice", "repo1", "t1", src, kind="rollout")
    url = "/v1/repo/repo1/targets/t1/rollout/output?limit=4"
    answered, status, body = await compare(both, "GET", url, user_key("alice"))
    page = orjson.loads(body)
    assert answered is True and status == 200 and page["lines"] == 6 and len(page["output"]) == 4
    assert "total_expected" in page and "stim_outdated" in page
    stim = records.job("alice", "repo1", "t1", "stim")
    assert stim is not None
    records.write_job("alice", "repo1", "t1", "stim", {**stim, "job_id": int(stim.get("job_id") or 0) + 100})
    answered, status, body = await compare(both, "GET", url, user_key("alice"))
    assert answered is True and status == 200
