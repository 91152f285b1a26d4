"""GET …/stim/export: byte identity, Range, gzip, formats, running jobs, crash repair, isolation."""
from __future__ import annotations

import gzip
import os

import orjson
import pytest

from stimserver.handlers.export import RangeNotSatisfiable, parse_range
from stimserver.store import formats, output
from stimserver.store.locks import FileLock
from stimserver.store.paths import DataPaths

BASE = "/v1/repo/repo1/targets/t1/stim"


@pytest.fixture
def alice(master_headers):
    # aiohttp's client asks for gzip by itself; these tests ask for it when they mean to
    return {**master_headers, "X-User-Id": "alice", "Accept-Encoding": "identity"}


def stored(paths: DataPaths, user="alice", repo="repo1", target="t1", kind="stim") -> bytes:
    job_dir = paths.job_dir(user, repo, target, kind)
    data = (job_dir / output.DATA_NAME).read_bytes()
    return data[:output.line_count(job_dir) and _end(job_dir)]


def _end(job_dir) -> int:
    raw = (job_dir / output.INDEX_NAME).read_bytes()
    return int.from_bytes(raw[-8:], "little")


async def test_export_is_the_stored_bytes(client, make_job, alice, paths):
    rows = make_job(lines=3000, record=lambda i: {"stimulus_id": i, "question": f"Q{i} " + "é" * (i % 7)})
    r = await client.get(BASE + "/export", headers=alice)
    assert r.status == 200
    body = await r.read()
    assert body == stored(paths)
    assert [orjson.loads(line) for line in body.splitlines()] == rows
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    assert int(r.headers["Content-Length"]) == len(body)
    assert r.headers["X-Stimserver-Lines"] == "3000"
    assert r.headers["X-Stimserver-Job-Status"] == "complete"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert "X-Stimserver-Job-Id" in r.headers


async def test_head_answers_the_headers_only(client, make_job, alice, paths):
    make_job(lines=50)
    r = await client.head(BASE + "/export", headers=alice)
    assert r.status == 200
    assert int(r.headers["Content-Length"]) == len(stored(paths))
    assert await r.read() == b""


async def test_range_resumes_an_interrupted_download(client, make_job, alice, paths):
    make_job(lines=2000)
    whole = stored(paths)
    cut = len(whole) // 3 + 5  # mid-line, as a broken connection leaves it
    r = await client.get(BASE + "/export", headers={**alice, "Range": f"bytes={cut}-"})
    assert r.status == 206
    assert r.headers["Content-Range"] == f"bytes {cut}-{len(whole) - 1}/{len(whole)}"
    rest = await r.read()
    assert whole[:cut] + rest == whole
    r = await client.get(BASE + "/export", headers={**alice, "Range": "bytes=10-19"})
    assert r.status == 206 and await r.read() == whole[10:20]
    r = await client.get(BASE + "/export", headers={**alice, "Range": "bytes=-7"})
    assert r.status == 206 and await r.read() == whole[-7:]


async def test_range_past_the_end_is_416(client, make_job, alice, paths):
    make_job(lines=10)
    size = len(stored(paths))
    r = await client.get(BASE + "/export", headers={**alice, "Range": f"bytes={size}-"})
    assert r.status == 416
    assert r.headers["Content-Range"] == f"bytes */{size}"
    body = await r.json()
    assert body["code"] == "RANGE_NOT_SATISFIABLE" and body["message"]


def test_parse_range():
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-", 100) == (0, 100)
    assert parse_range("bytes=5-9", 100) == (5, 10)
    assert parse_range("bytes=90-200", 100) == (90, 100)
    assert parse_range("bytes=-10", 100) == (90, 100)
    assert parse_range("bytes=-200", 100) == (0, 100)
    assert parse_range("bytes=0-1,5-6", 100) is None  # multi-part: the whole, as RFC 9110 allows
    assert parse_range("items=0-1", 100) is None
    assert parse_range("bytes=9-5", 100) is None
    for bad in ("bytes=100-", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(bad, 100)


async def test_gzip_when_asked(client, make_job, alice, paths):
    make_job(lines=5000)
    r = await client.get(BASE + "/export", headers={**alice, "Accept-Encoding": "gzip"}, auto_decompress=False)
    assert r.status == 200
    assert r.headers["Content-Encoding"] == "gzip"
    assert "Content-Length" not in r.headers
    compressed = await r.read()
    assert gzip.decompress(compressed) == stored(paths)
    assert len(compressed) < len(stored(paths))
    # a Range counts the stored bytes, so it is answered without gzip
    r = await client.get(BASE + "/export", headers={**alice, "Accept-Encoding": "gzip", "Range": "bytes=3-"},
                         auto_decompress=False)
    assert r.status == 206 and "Content-Encoding" not in r.headers
    assert await r.read() == stored(paths)[3:]
    r = await client.get(BASE + "/export", headers={**alice, "Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in r.headers


async def test_questions_format(client, make_job, alice):
    rows = make_job(lines=100, record=lambda i: {"stimulus_id": i, "question": f"Q{i}?", "type": "hardcoded",
                                                  "unconditioned_stimulus": {"messages": []}})
    r = await client.get(BASE + "/export?format=questions", headers=alice)
    assert r.status == 200
    got = [orjson.loads(line) for line in (await r.read()).splitlines()]
    assert got == [{"stimulus_id": row["stimulus_id"], "question": row["question"]} for row in rows]
    r = await client.get(BASE + "/export?format=questions", headers={**alice, "Accept-Encoding": "gzip"},
                         auto_decompress=False)
    assert [orjson.loads(x) for x in gzip.decompress(await r.read()).splitlines()] == got


@pytest.mark.parametrize("fmt", ["sft", "csv", ""])
async def test_unknown_format_is_422(client, make_job, alice, fmt):
    make_job(lines=3)
    r = await client.get(BASE + f"/export?format={fmt}", headers=alice)
    assert r.status == 422
    body = await r.json()
    assert body["detail"][0]["loc"] == ["query", "format"]
    assert "raw, questions" in body["message"]


async def test_empty_and_missing(client, make_job, alice, records):
    make_job(lines=1)
    records.create_target("alice", "repo1", {**records.target("alice", "repo1", "t1"), "target_name": "t2"})
    r = await client.get("/v1/repo/repo1/targets/t2/stim/export", headers=alice)
    assert r.status == 200 and await r.read() == b""
    assert r.headers["X-Stimserver-Lines"] == "0" and r.headers["X-Stimserver-Job-Status"] == "not_started"
    for path in ("/v1/repo/repo1/targets/nope/stim/export", "/v1/repo/nope/targets/t1/stim/export"):
        r = await client.get(path, headers=alice)
        assert r.status == 404 and (await r.json())["code"] == "RESOURCE_NOT_FOUND"
    r = await client.get("/v1/repo/repo1/targets/bad..name./stim/export", headers=alice)
    assert r.status == 422


async def test_other_users_output_is_not_exported(client, make_job, master_headers, user_key):
    make_job(lines=5, user="alice")
    bob = {**user_key("bob"), "Accept-Encoding": "identity"}
    r = await client.get(BASE + "/export", headers=bob)
    assert r.status == 404
    r = await client.get(BASE + "/export", headers={**bob, "X-User-Id": "alice"})
    assert r.status == 403
    r = await client.get(BASE + "/export")
    assert r.status == 401


async def test_running_job_exports_what_is_committed(client, make_job, alice, paths, records):
    """A writer appending meanwhile (and a torn tail) never shows: only the committed lines."""
    make_job(lines=10)
    job_dir = paths.job_dir("alice", "repo1", "t1", "stim")
    job = records.job("alice", "repo1", "t1", "stim")
    records.write_job("alice", "repo1", "t1", "stim", {**job, "status": "running"})
    lock = FileLock.acquire(output.lock_path(job_dir), blocking=True)
    try:
        with output.OutputWriter.open(job_dir, lock) as w:
            w.append([output.encode({"stimulus_id": i, "question": "live"}) for i in range(10, 15)])
            committed = stored(paths)
            with open(job_dir / output.DATA_NAME, "ab") as f:
                f.write(b'{"stimulus_id": 15, "quest')  # written, not yet indexed
            r = await client.get(BASE + "/export", headers=alice)
            assert r.status == 200
            assert await r.read() == committed
            assert r.headers["X-Stimserver-Lines"] == "15"
            assert r.headers["X-Stimserver-Job-Status"] == "running"
    finally:
        lock.release()


async def test_export_after_a_crash_repair(client, make_job, alice, paths):
    """A torn index (a crash mid-append) is repaired first; the export is the recovered lines, exactly."""
    rows = make_job(lines=100)
    job_dir = paths.job_dir("alice", "repo1", "t1", "stim")
    with open(job_dir / output.DATA_NAME, "ab") as f:
        f.write(b'{"stimulus_id": 100}\n{"torn')
    with open(job_dir / output.INDEX_NAME, "ab") as f:
        f.write(b"\x01\x02\x03")  # a torn index entry
    r = await client.get(BASE + "/export", headers=alice)
    body = await r.read()
    assert r.status == 200
    got = [orjson.loads(line) for line in body.splitlines()]
    assert got[:100] == rows and got[100:] == [{"stimulus_id": 100}]
    assert body == stored(paths)
    assert os.path.getsize(job_dir / output.INDEX_NAME) == 101 * 8


def test_sft_rows_from_a_rollout_fixture(paths, records, make_job):
    """Rollout-shaped lines written straight into a rollout job folder with the store's writer."""
    make_job(lines=1)
    job_dir = paths.job_dir("alice", "repo1", "t1", "rollout")
    job_dir.mkdir(parents=True)
    student = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    lines = [
        {"stimulus_id": 0, "trajectory_id": 0, "question": "2+2?", "conditioned_stimulus": {"messages": student},
         "unconditioned_stimulus": {"messages": [{"role": "user", "content": "teacher"}]},
         "response": {"role": "assistant", "content": "4", "finish_reason": "stop"}, "tokens": 9},
        {"stimulus_id": 0, "trajectory_id": 1, "question": "2+2?", "conditioned_stimulus": {"messages": student},
         "response": None, "error": "context too long", "tokens": 0},
        {"stimulus_id": 1, "trajectory_id": 0, "question": "x", "conditioned_stimulus": {"messages": student[1:]},
         "response": "a string response", "tokens": 3},
    ]
    lock = FileLock.acquire(output.lock_path(job_dir), blocking=True)
    try:
        with output.OutputWriter.open(job_dir, lock) as w:
            w.append([output.encode(x) for x in lines])
    finally:
        lock.release()
    from stimserver.store import snapshot

    with snapshot.take(job_dir) as snap:
        convert = formats.converter("sft", "rollout")
        rows = [orjson.loads(x) for x in b"".join(formats.convert_chunks(snap.chunks(0, snap.size, 50),
                                                                          convert)).splitlines()]
    assert rows == [
        {"messages": [*student, {"role": "assistant", "content": "4"}]},
        {"messages": [student[1], {"role": "assistant", "content": "a string response"}]},
    ]
    with pytest.raises(ValueError, match="raw, sft"):
        formats.converter("questions", "rollout")



async def test_raw_export_goes_by_sendfile(client, make_job, alice, paths, monkeypatch):
    """The stored bytes go by the kernel's sendfile; where the transport cannot, by chunked reads."""
    import asyncio

    make_job(lines=500)
    calls = []
    loop = asyncio.get_running_loop()
    real = loop.sendfile

    async def spy(transport, file, offset=0, count=None, **kw):
        calls.append((offset, count))
        return await real(transport, file, offset, count, **kw)

    monkeypatch.setattr(loop, "sendfile", spy)
    r = await client.get(BASE + "/export", headers={**alice, "Range": "bytes=100-"})
    assert await r.read() == stored(paths)[100:]
    assert calls == [(100, len(stored(paths)) - 100)]

    async def unsupported(*args, **kw):
        raise NotImplementedError

    monkeypatch.setattr(loop, "sendfile", unsupported)
    r = await client.get(BASE + "/export", headers=alice)
    assert await r.read() == stored(paths)


async def test_the_access_log_counts_the_bytes_sent(client, make_job, alice, paths, monkeypatch):
    """sendfile bypasses aiohttp's writer; the export counts what it sent, so the access log's bytes are true."""
    import asyncio

    from aiohttp import web

    seen: list[int] = []
    real = web.StreamResponse.write_eof

    async def write_eof(self, data=b""):
        await real(self, data)
        seen.append(self.body_length)  # what the access logger reads

    monkeypatch.setattr(web.StreamResponse, "write_eof", write_eof)
    make_job(lines=300)
    r = await client.get(BASE + "/export", headers=alice)
    assert await r.read() == stored(paths)
    for _ in range(500):  # the handler finishes just after the client has the last byte
        if seen:
            break
        await asyncio.sleep(0.01)
    assert len(stored(paths)) <= seen[-1] < len(stored(paths)) + 2000  # aiohttp counts the headers too
