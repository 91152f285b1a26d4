"""The paging fast path (issue 13): open outputs of complete jobs, and what must still be seen at once.

Every change below is made the way another process would make it (a separate ``Records``,
plain file operations), so the serving app learns of it only through the files.
"""
from __future__ import annotations

import os

import orjson
import pytest

from stimserver.keys import RECORDS
from stimserver.store import jobrecords as jr
from stimserver.store import output
from stimserver.store.locks import FileLock
from stimserver.store.opencache import OpenOutputs
from stimserver.store.output import OutputWriter, lock_path
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records

BASE = "/v1/repo/repo1/targets/t1/stim/output"


@pytest.fixture
def alice(master_headers):
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
    from stimserver.app import create_app

    make_job(lines=3)
    app = create_app(settings)
    client = await aiohttp_client(app)
    assert (await page(client, {**master_headers, "X-User-Id": "alice"}))[0] == 200
    entry = next(iter(app[RECORDS].outputs._items.values()))
    await client.close()
    assert len(app[RECORDS].outputs) == 0 and _closed(entry.data_fd) and _closed(entry.idx_fd)
