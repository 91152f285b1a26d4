"""The paging fast path (issue 13): open outputs of complete jobs, and what must still be seen at once.

Every change below is made the way another process would make it (a separate ``Records``,
plain file operations), so the serving app learns of it only through the files.
"""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import orjson
import pytest
from aiohttp import web

from stimserver.api.fastresponse import FastJsonResponse
from stimserver.api.keys import RECORDS
from stimserver.store import jobrecords as jr
from stimserver.store import output
from stimserver.store.locks import FileLock
from stimserver.store.opencache import OpenOutputs
from stimserver.store.output import OutputWriter, lock_path
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records

BASE = "/v1/repo/repo1/targets/t1/stim/output"


@pytest.fixture(params=["alice's key", "master as alice"])
def alice(request, master_headers, user_key):
    """Alice's pages: by her own key (answered before the router, fastpage.py) or the master key naming her."""
    if request.param == "alice's key":
        return user_key("alice")
    return {**master_headers, "X-User-Id": "alice"}


async def page(client, headers, offset=0, limit=100):
    r = await client.get(f"{BASE}?offset={offset}&limit={limit}", headers=headers)
    return r.status, await r.json()


def other_process(records: Records) -> Records:
    """A Records of its own, as `stimserver worker` or another serve process has."""
    return Records(DataPaths(records.paths.root))


def served(client) -> Records:
    return client.server.app[RECORDS]


async def test_a_complete_page_comes_from_the_open_files(client, make_job, alice):
    rows = make_job(lines=50)
    status, body = await page(client, alice, 10, 5)
    assert status == 200 and body["output"] == rows[10:15] and body["lines"] == 50 and body["has_more"]
    assert len(served(client).outputs) == 1  # the fast path answered and kept the files open
    status, body = await page(client, alice, 45, 100)
    assert body["output"] == rows[45:] and body["has_more"] is False
    assert (await page(client, alice, 50, 10))[1]["output"] == []
    assert (await page(client, alice, 500, 10))[1]["output"] == []


async def test_a_rerun_is_seen_by_the_next_page(client, make_job, alice, records):
    make_job(lines=20)
    assert (await page(client, alice))[1]["lines"] == 20
    job_dir = records.paths.job_dir("alice", "repo1", "t1", "stim")
    elsewhere = other_process(records)
    record = jr.read_record(job_dir)
    assert record is not None
    # A re-run elsewhere: the record changes first (failed, then a new pending job), the output is reset,
    # new lines are written, and the job completes again.
    jr.write_record(job_dir, {**record, "status": "failed"})
    with FileLock.acquire(lock_path(job_dir), blocking=True) as lock:
        jr.reset_output(job_dir)
        jr.write_record(job_dir, {**record, "status": "running", "job_id": 99})
        assert (await page(client, alice))[1]["output"] == []  # reset: nothing committed yet
        with OutputWriter.open(job_dir, lock) as writer:
            writer.append([orjson.dumps({"stimulus_id": 1000 + i}) for i in range(3)])
    elsewhere.write_job("alice", "repo1", "t1", "stim", {**record, "status": "complete", "job_id": 99})
    status, body = await page(client, alice)
    assert status == 200 and body["job_id"] == 99 and body["lines"] == 3
    assert [r["stimulus_id"] for r in body["output"]] == [1000, 1001, 1002]


RERUN_ELSEWHERE = """
import sys, orjson
from pathlib import Path
from stimserver.store import jobrecords as jr
from stimserver.store.locks import FileLock
from stimserver.store.output import OutputWriter, lock_path
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
records = Records(DataPaths(Path(sys.argv[1])))
job_dir = records.paths.job_dir("alice", "repo1", "t1", "stim")
record = jr.read_record(job_dir)
jr.write_record(job_dir, {**record, "status": "failed"})
with FileLock.acquire(lock_path(job_dir), blocking=True) as lock:
    jr.reset_output(job_dir)
    jr.write_record(job_dir, {**record, "status": "running", "job_id": 77})
    with OutputWriter.open(job_dir, lock) as writer:
        writer.append([orjson.dumps({"stimulus_id": 2000 + i}) for i in range(4)])
records.write_job("alice", "repo1", "t1", "stim", {**record, "status": "complete", "job_id": 77})
"""


async def test_a_rerun_by_another_os_process_is_seen_by_the_next_page(client, make_job, alice, records):
    """The change board (store/changes.py) lets hits skip their stat; another process's re-run still shows at once."""
    make_job(lines=20)
    for _ in range(3):
        assert (await page(client, alice))[1]["lines"] == 20
    subprocess.run([sys.executable, "-c", RERUN_ELSEWHERE, str(records.paths.root)], check=True, timeout=60)
    status, body = await page(client, alice)
    assert status == 200 and body["job_id"] == 77 and body["lines"] == 4
    assert [r["stimulus_id"] for r in body["output"]] == [2000, 2001, 2002, 2003]


async def test_a_deleted_target_is_seen_by_the_next_page(client, make_job, alice, records):
    make_job(lines=20)
    assert (await page(client, alice))[0] == 200
    elsewhere = other_process(records)
    locks = elsewhere.lock_target_jobs("alice", "repo1", "t1")
    assert locks is not None
    trash = elsewhere.trash_target("alice", "repo1", "t1")
    for lock in locks:
        lock.release()
    status, body = await page(client, alice)
    assert status == 404 and body["code"] == "RESOURCE_NOT_FOUND"
    elsewhere.purge_trash("alice", "repo1")
    assert not trash.exists()


async def test_a_crash_repair_is_seen_by_the_next_page(client, make_job, alice, records):
    """Damage after the files were opened (a torn tail), then the next read: repaired, never torn."""
    rows = make_job(lines=20)
    assert (await page(client, alice))[1]["lines"] == 20
    data = records.paths.job_dir("alice", "repo1", "t1", "stim") / output.DATA_NAME
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size - 5)  # the last line loses its end, the index still counts it
    status, body = await page(client, alice, 15, 100)
    assert status == 200 and body["lines"] == 19 and body["output"] == rows[15:19]
    status, body = await page(client, alice, 0, 100)
    assert body["output"] == rows[:19]


async def test_an_output_changed_in_place_is_read_the_usual_way(client, make_job, alice, records):
    """Appended bytes (no record change) make the open entry disagree; the ordinary reader answers."""
    rows = make_job(lines=5)
    assert (await page(client, alice))[1]["output"] == rows
    data = records.paths.job_dir("alice", "repo1", "t1", "stim") / output.DATA_NAME
    with open(data, "ab") as f:
        f.write(b'{"stimulus_id": 5, "torn"')  # an uncommitted (and torn) line
    status, body = await page(client, alice)
    assert status == 200 and body["output"] == rows and body["lines"] == 5


def test_the_cache_has_a_fixed_size_and_closes_what_it_drops(tmp_path, make_job, records):
    outputs = OpenOutputs(size=2)
    dirs, fds = [], []
    for i in range(5):
        make_job(lines=3, target=f"t{i}")
        job_dir = records.paths.job_dir("alice", "repo1", f"t{i}", "stim")
        _, version = records.job_versioned("alice", "repo1", f"t{i}", "stim")
        assert version is not None
        lines = outputs.lines(job_dir, version, 0, 10)
        assert lines is not None and lines.count == 3
        dirs.append(job_dir)
        entry = outputs._items[job_dir]
        fds.append((entry.data_fd, entry.idx_fd))
        assert len(outputs) <= 2
    assert list(outputs._items) == dirs[-2:]
    for data_fd, idx_fd in fds[:-2]:  # the evicted ones are closed (or reused by the newer entries)
        for fd in (data_fd, idx_fd):
            assert fd in {f for pair in fds[-2:] for f in pair} or _closed(fd)
    outputs.close()
    assert len(outputs) == 0


def test_a_stale_version_is_not_served(make_job, records):
    make_job(lines=3)
    job_dir = records.paths.job_dir("alice", "repo1", "t1", "stim")
    _, version = records.job_versioned("alice", "repo1", "t1", "stim")
    assert version is not None
    outputs = OpenOutputs()
    assert outputs.lines(job_dir, version, 0, 10) is not None
    jr.reset_output(job_dir)  # unlinked under the open entry
    assert outputs.lines(job_dir, version, 0, 10) is None and len(outputs) == 0


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


@pytest.mark.parametrize("offset, limit", [(0, 100), (0, 7), (3, 7), (19, 5), (20, 5), (999, 1)])
async def test_the_fast_page_is_the_ordinary_page(client, make_job, alice, monkeypatch, offset, limit):
    """Byte for byte what the ordinary reader's envelope says, for any offset."""
    make_job(lines=20)
    r = await client.get(f"{BASE}?offset={offset}&limit={limit}", headers=alice)
    fast = await r.read()
    assert len(served(client).outputs) == 1
    monkeypatch.setattr(Records, "complete_lines", lambda self, *args: None)
    r = await client.get(f"{BASE}?offset={offset}&limit={limit}", headers=alice)
    assert await r.read() == fast


async def test_the_open_files_are_closed_when_the_app_stops(aiohttp_client, settings, make_job, master_headers):
    from stimserver.web.app import create_app

    make_job(lines=3)
    app = create_app(settings)
    client = await aiohttp_client(app)
    assert (await page(client, {**master_headers, "X-User-Id": "alice"}))[0] == 200
    entry = next(iter(app[RECORDS].outputs._items.values()))
    await client.close()
    assert len(app[RECORDS].outputs) == 0 and _closed(entry.data_fd) and _closed(entry.idx_fd)


# -- the response head written in one piece (stimserver/api/fastresponse.py) ------------------------------

async def _raw_exchange(port: int, raw: bytes) -> bytes:
    """Send raw request bytes, read until the server closes or 2 s pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 2.0):
            chunks.append(chunk)
    except TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)


def _without_date(raw: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", raw)


@pytest.fixture
async def fast_and_plain(aiohttp_server):
    """One app answering the same JSON through FastJsonResponse (/fast) and web.Response (/plain)."""
    body = orjson.dumps({"output": [{"stimulus_id": 1}], "ok": True})

    async def fast(request: web.Request) -> web.StreamResponse:
        response = FastJsonResponse(body)
        response.headers["X-Request-Id"] = "abc123"
        return response

    async def plain(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=body, content_type="application/json")
        response.headers["X-Request-Id"] = "abc123"
        return response

    app = web.Application()
    app.router.add_get("/fast", fast)
    app.router.add_get("/plain", plain)
    return await aiohttp_server(app)


@pytest.mark.parametrize("request_line, headers", [
    ("GET {} HTTP/1.1", ""),
    ("GET {} HTTP/1.1", "Connection: close\r\n"),
    ("GET {} HTTP/1.0", ""),
    ("GET {} HTTP/1.0", "Connection: keep-alive\r\n"),
    ("HEAD {} HTTP/1.1", ""),
], ids=["1.1", "1.1-close", "1.0", "1.0-keep-alive", "head"])
async def test_the_one_piece_head_is_the_head_aiohttp_writes(fast_and_plain, request_line, headers):
    """Byte for byte (but the clock): status line, headers, Connection, body; HEAD goes aiohttp's way."""
    answers = []
    for path in ("/fast", "/plain"):
        raw = f"{request_line.format(path)}\r\nHost: x\r\n{headers}\r\n".encode()
        answers.append(_without_date(await _raw_exchange(fast_and_plain.port, raw)))
    assert answers[0].startswith(b"HTTP/1.") and b"X-Request-Id: abc123\r\n" in answers[0]
    assert answers[0] == answers[1]


async def test_a_header_aiohttp_would_refuse_is_refused_not_written(fast_and_plain, aiohttp_server):
    """A CR/LF in a header value: the one-piece head steps aside and aiohttp refuses it, as for web.Response."""
    async def injected(request: web.Request) -> web.StreamResponse:
        kind = FastJsonResponse if request.match_info["kind"] == "fast" else web.Response
        response = kind(body=b"{}")
        response.headers["X-Note"] = "a\r\nSet-Cookie: stolen=1"
        return response

    app = web.Application()
    app.router.add_get("/{kind}", injected)
    server = await aiohttp_server(app)
    answers = [await _raw_exchange(server.port, f"GET /{kind} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
               for kind in ("fast", "plain")]
    assert answers[0] == answers[1] and b"stolen" not in answers[0]


@pytest.mark.parametrize("status, headers", [(200, None), (404, {"X-Request-Id": "r1", "X-Other": "2"})])
def test_a_fast_response_is_made_as_web_response_makes_it(status, headers):
    """FastJsonResponse sets what ``web.Response(body=..., content_type=...)`` sets, without its generic
    steps: the same attributes and values, so aiohttp (and a newer aiohttp) treats both alike."""
    body = b'{"output":[]}'
    fast = FastJsonResponse(body, status=status, headers=headers)
    plain = web.Response(body=body, status=status, content_type="application/json", headers=headers)
    mine = {k: v for k, v in vars(fast).items() if k != "_head"}
    theirs = vars(plain)
    assert mine.keys() == theirs.keys()
    for name, value in theirs.items():
        if name == "_headers":
            assert list(mine[name].items()) == list(value.items())
        else:
            assert mine[name] == value, name


async def test_body_length_is_counted_as_aiohttp_counts_it(aiohttp_client):
    """The access log's ``bytes`` (``body_length``): the writer's count, head included, on either path."""
    made: dict[str, web.StreamResponse] = {}

    async def answer(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        response = made[kind] = (FastJsonResponse(b'{"a":1}') if kind == "fast"
                                 else web.Response(body=b'{"a":1}', content_type="application/json"))
        return response

    app = web.Application()
    app.router.add_get("/{kind}", answer)
    client = await aiohttp_client(app)
    for kind in ("fast", "plain"):
        assert (await client.get(f"/{kind}")).status == 200
    assert made["fast"].body_length == made["plain"].body_length > len(b'{"a":1}')
    assert made["fast"].prepared and made["fast"].keep_alive
