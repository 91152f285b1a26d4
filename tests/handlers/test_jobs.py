"""GET …/stim and …/stim/output: every field, every edge of API.md §9 and §11."""
from __future__ import annotations

import orjson
import pytest

from stimserver.handlers import jobs as jobs_handlers
from stimserver.store import output
from stimserver.store.locks import FileLock
from stimserver.targetconfig import DEFAULT_TARGET_CONFIG

BASE = "/v1/repo/repo1/targets/t1/stim"
FIELDS = {"status", "lines", "config", "error", "job_id", "progress_percent"}
PAGE_FIELDS = FIELDS | {"output", "offset", "limit", "has_more"}


@pytest.fixture
def alice(master_headers):
    return {**master_headers, "X-User-Id": "alice"}


async def get(client, path, headers):
    r = await client.get(path, headers=headers)
    assert r.content_type == "application/json"
    return r.status, await r.json()


PAGES = [
    (0, 100, 0, 100, True), (0, None, 0, 100, True), (200, 50, 200, 50, True), (950, 100, 950, 50, False),
    (999, 1, 999, 1, False), (1000, 10, 1000, 0, False), (5000, 10, 5000, 0, False), (0, 1000, 0, 1000, False),
]


@pytest.mark.parametrize("offset, limit, first, count, has_more", PAGES,
                         ids=[f"o{p[0]}-l{p[1]}" for p in PAGES])
async def test_pages(client, make_job, alice, offset, limit, first, count, has_more):
    rows = make_job(lines=1000)
    query = f"?offset={offset}" + (f"&limit={limit}" if limit else "")
    status, body = await get(client, BASE + "/output" + query, alice)
    assert status == 200
    assert set(body) == PAGE_FIELDS
    assert body["output"] == rows[first:first + count]
    assert body["offset"] == offset and body["limit"] == (limit or 100)
    assert body["has_more"] is has_more
    assert body["lines"] == 1000 and body["status"] == "complete" and body["progress_percent"] == 100.0
    assert body["config"] == DEFAULT_TARGET_CONFIG and body["error"] is None
    assert isinstance(body["job_id"], int)


async def test_deep_pages_are_exact(client, make_job, alice):
    rows = make_job(lines=20_000, record=lambda i: {"stimulus_id": i, "q": "x" * (i % 50)})
    for offset in (0, 9_999, 19_950):
        _, body = await get(client, f"{BASE}/output?offset={offset}&limit=50", alice)
        assert body["output"] == rows[offset:offset + 50]


async def test_large_page_read_off_the_event_loop(client, make_job, alice, monkeypatch):
    rows = make_job(lines=300, record=lambda i: {"stimulus_id": i, "pad": "é" * 300})
    monkeypatch.setattr(jobs_handlers, "INLINE_READ_BYTES", 1000)
    _, body = await get(client, f"{BASE}/output?offset=5&limit=200", alice)
    assert body["output"] == rows[5:205]


async def test_status_endpoint(client, make_job, alice):
    make_job(lines=12)
    status, body = await get(client, BASE, alice)
    assert status == 200 and set(body) == FIELDS
    assert body["status"] == "complete" and body["lines"] == 12


async def test_not_started(client, make_job, alice, records):
    make_job(lines=1, target="other")  # creates repo1; t1 needs its own target record
    records.create(records.paths.target("alice", "repo1", "t1") / "target.json",
                   {"target_name": "t1", "config": DEFAULT_TARGET_CONFIG})
    status, body = await get(client, BASE, alice)
    assert status == 200 and body == {"status": "not_started", "lines": None, "config": None, "error": None,
                                      "job_id": None, "progress_percent": None}
    status, body = await get(client, BASE + "/output?offset=3", alice)
    assert status == 200
    assert body["output"] == [] and body["has_more"] is False and body["lines"] is None
    assert body["offset"] == 3 and body["limit"] == 100


def write_job(records, status, lines, expected, error=None) -> FileLock:
    """A job record plus committed lines; returns the writer's lock, still held (a live writer)."""
    jdir = records.paths.job_dir("alice", "repo1", "t1", "stim")
    records.write_job("alice", "repo1", "t1", "stim", {
        "job_id": 7, "kind": "stim", "status": status, "config": {"generators": []},
        "expected_lines": expected, "error": error})
    lock = FileLock.acquire(output.lock_path(jdir), blocking=False)
    with output.OutputWriter.open(jdir, lock) as w:
        w.append([output.encode({"stimulus_id": i}) for i in range(lines)])
    return lock


@pytest.fixture
async def idle_client(aiohttp_client, settings):
    """An app with no job runner, so hand-made job records stay exactly as written."""
    from dataclasses import replace

    from stimserver.app import create_app

    return await aiohttp_client(create_app(replace(settings, run_jobs=False)))


async def test_running_job_pages_what_is_committed(idle_client, make_job, records, alice):
    client = idle_client
    make_job(lines=1)
    (records.paths.job_dir("alice", "repo1", "t1", "stim") / "output.jsonl").unlink()
    (records.paths.job_dir("alice", "repo1", "t1", "stim") / "output.idx").unlink()
    with write_job(records, "running", 30, 120):
        _, body = await get(client, BASE + "/output?offset=20&limit=100", alice)
    assert body["status"] == "running" and body["lines"] == 30 and body["progress_percent"] == 25.0
    assert [r["stimulus_id"] for r in body["output"]] == list(range(20, 30)) and body["has_more"] is False


async def test_failed_job_keeps_committed_lines(idle_client, make_job, records, alice):
    client = idle_client
    make_job(lines=1)
    jdir = records.paths.job_dir("alice", "repo1", "t1", "stim")
    (jdir / "output.jsonl").unlink()
    (jdir / "output.idx").unlink()
    write_job(records, "failed", 4, 10, error="LLM provider unreachable").release()
    _, body = await get(client, BASE + "/output", alice)
    assert body["status"] == "failed" and body["error"] == "LLM provider unreachable"
    assert len(body["output"]) == 4 and body["lines"] == 4


NOT_FOUND = {"repo": "/v1/repo/nope/targets/t1/stim/output", "target": "/v1/repo/repo1/targets/nope/stim/output",
             "status-target": "/v1/repo/repo1/targets/nope/stim"}


@pytest.mark.parametrize("path", NOT_FOUND.values(), ids=NOT_FOUND.keys())
async def test_unknown_repo_or_target_is_404(client, make_job, alice, path):
    make_job(lines=1)
    status, body = await get(client, path, alice)
    assert status == 404 and body["code"] == "RESOURCE_NOT_FOUND" and "nope" in body["message"]


BAD_QUERY = {
    "offset-negative": ("offset=-1", "offset"), "offset-text": ("offset=abc", "offset"),
    "offset-float": ("offset=1.5", "offset"), "limit-zero": ("limit=0", "limit"),
    "limit-over": ("limit=1001", "limit"), "limit-text": ("limit=ten", "limit"),
    "limit-huge": ("limit=99999999999999999999999", "limit"), "offset-unicode-digits": ("offset=١٢", "offset"),
    "offset-double-minus": ("offset=--1", "offset"), "limit-double-minus": ("limit=--5", "limit"),
    "offset-minus-only": ("offset=-", "offset"),
}


@pytest.mark.parametrize("query, field", BAD_QUERY.values(), ids=BAD_QUERY.keys())
async def test_bad_paging_is_422_naming_the_parameter(client, make_job, alice, query, field):
    make_job(lines=1)
    status, body = await get(client, f"{BASE}/output?{query}", alice)
    assert status == 422 and body["code"] == "VALIDATION_ERROR"
    assert field in body["message"] and body["detail"][0]["loc"] == ["query", field]


async def test_encoded_dotdot_never_reaches_a_handler(client, make_job, alice):
    """aiohttp normalises '..' segments away, so the path no longer matches a route."""
    make_job(lines=1)
    status, body = await get(client, "/v1/repo/%2E%2E/targets/t1/stim/output", alice)
    assert status == 404 and body["code"] == "RESOURCE_NOT_FOUND"


BAD_NAMES = {"space": "/v1/repo/a%20b/targets/t1/stim/output",
             "nul": "/v1/repo/a%00b/targets/t1/stim/output",
             "long": "/v1/repo/" + "x" * 200 + "/targets/t1/stim/output",
             "target-backslash": "/v1/repo/repo1/targets/a%5Cb/stim/output"}


@pytest.mark.parametrize("path", BAD_NAMES.values(), ids=BAD_NAMES.keys())
async def test_bad_names_in_urls_are_422(client, make_job, alice, path):
    make_job(lines=1)
    status, body = await get(client, path, alice)
    assert status == 422 and body["detail"][0]["loc"][0] == "path"


async def test_body_is_spliced_bytes_of_stored_lines(client, make_job, alice):
    make_job(lines=3, record=lambda i: {"z": i, "a": "ünï\u2028"})
    r = await client.get(BASE + "/output", headers=alice)
    raw = await r.read()
    assert raw.startswith(b'{"output":[{"z":0,"a":"')
    assert orjson.loads(raw)["output"][2] == {"z": 2, "a": "ünï\u2028"}


async def test_damaged_index_is_repaired_for_the_reader(client, make_job, records, alice):
    rows = make_job(lines=50)
    jdir = records.paths.job_dir("alice", "repo1", "t1", "stim")
    (jdir / "output.idx").write_bytes(b"\xff" * 21)
    _, body = await get(client, BASE + "/output?offset=45", alice)
    assert body["output"] == rows[45:] and body["lines"] == 50
