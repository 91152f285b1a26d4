"""The job HTTP endpoints (API.md §9, §10.1, §11), in one place.

First GET …/stim and …/stim/output on finished or hand-made jobs: every field, every
edge. Then POST …/stim and the status/output endpoints while jobs really run.
"""
from __future__ import annotations

import random
import threading

import orjson
import pytest

from stimserver.api.keys import JOB_CONTROL
from stimserver.config import Settings
from stimserver.handlers import jobs as jobs_handlers
from stimserver.schemas.targets import DEFAULT_TARGET_CONFIG
from stimserver.store import output
from stimserver.store.locks import FileLock
from stimserver.web.app import create_app
from tests.jobs.conftest import hardcoded, seed_target, wait_until
from tests.jobs.test_runner import GateKind

BASE = "/v1/repo/repo1/targets/t1/stim"
FIELDS = {"status", "lines", "config", "error", "job_id", "progress_percent", "usage"}
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


@pytest.fixture
def thread_reads(monkeypatch):
    """The names of the threads that read a large page (``output._Deferred.read``)."""
    ran: list[str] = []
    original = output._Deferred.read

    def read(self):
        ran.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(output._Deferred, "read", read)
    return ran


async def test_large_page_read_off_the_event_loop(client, make_job, alice, monkeypatch, thread_reads):
    rows = make_job(lines=300, record=lambda i: {"stimulus_id": i, "pad": "é" * 300})
    monkeypatch.setattr(output, "INLINE_READ_BYTES", 1000)
    _, body = await get(client, f"{BASE}/output?offset=5&limit=200", alice)
    assert body["output"] == rows[5:205]
    assert len(thread_reads) == 1 and thread_reads[0] != threading.main_thread().name  # the thread branch ran


async def test_ordinary_page_is_read_inline(client, make_job, alice, thread_reads):
    rows = make_job(lines=300, record=lambda i: {"stimulus_id": i, "pad": "é" * 300})
    _, body = await get(client, f"{BASE}/output?offset=5&limit=200", alice)
    assert body["output"] == rows[5:205] and thread_reads == []


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
                                      "job_id": None, "progress_percent": None, "usage": None}
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

    from stimserver.web.app import create_app

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


# -- runs: POST …/stim and pages while a job appends ----------------------------------------

STIM = "/v1/repo/r1/targets/t1/stim"


async def call(client, method, path, headers):
    r = await client.request(method, path, headers=headers)
    assert r.content_type == "application/json"
    return r.status, await r.json()


async def status_of(client, alice, want):
    async def check():
        _, body = await call(client, "GET", STIM, alice)
        return body if body["status"] == want else None
    return await wait_until(check, f"status {want}")


@pytest.fixture
def gate(client):
    kind = GateKind(0)
    client.app[JOB_CONTROL].kinds["stim"] = kind
    return kind


async def test_post_answers_complete_for_a_quick_job(client, alice, paths, monkeypatch):
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 60.0)
    seed_target(paths, [hardcoded(3), {"type": "from_dataset", "dataset": "arithmetic", "numq": 20}])
    status, body = await call(client, "POST", STIM, alice)
    assert status == 200 and set(body) == FIELDS
    assert body["status"] == "complete" and body["lines"] == 23 and body["progress_percent"] == 100.0
    assert isinstance(body["job_id"], int) and body["error"] is None
    assert body["config"]["generators"][0]["type"] == "hardcoded"
    _, page = await call(client, "GET", STIM + "/output?limit=100", alice)
    assert [line["stimulus_id"] for line in page["output"]] == list(range(23))
    assert page["output"][5]["type"] == "from_dataset" and page["has_more"] is False


async def test_post_is_idempotent_while_a_job_exists(client, alice, paths, gate, monkeypatch):
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 0.0)
    gate.total = 40
    seed_target(paths, [hardcoded(1)])
    _, first = await call(client, "POST", STIM, alice)
    assert first["status"] in ("pending", "running") and first["job_id"]
    running = await status_of(client, alice, "running")
    _, again = await call(client, "POST", STIM, alice)
    assert again["job_id"] == first["job_id"] and again["status"] == "running"
    assert running["progress_percent"] == 0.0 and running["lines"] == 0
    gate.release(40)
    done = await status_of(client, alice, "complete")
    _, after = await call(client, "POST", STIM, alice)
    assert after == done and after["job_id"] == first["job_id"]


async def test_post_after_a_failure_resumes_the_same_job(client, alice, paths, gate, monkeypatch):
    """A failed job's committed lines are kept: POST continues it; only DELETE …/output starts over."""
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 0.0)
    gate.total, gate.fail_at = 10, 6
    seed_target(paths, [hardcoded(1)])
    _, first = await call(client, "POST", STIM, alice)
    gate.release(10)
    failed = await status_of(client, alice, "failed")
    assert failed["lines"] == 6 and "internal error" in failed["error"]
    _, page = await call(client, "GET", STIM + "/output", alice)  # committed lines stay readable
    assert [line["stimulus_id"] for line in page["output"]] == list(range(6))
    gate.fail_at = None
    _, second = await call(client, "POST", STIM, alice)
    assert second["job_id"] == first["job_id"] and second["status"] in ("pending", "running", "complete")
    assert second["error"] is None
    gate.release(10)
    assert (await status_of(client, alice, "complete"))["lines"] == 10
    _, after = await call(client, "GET", STIM + "/output", alice)
    assert after["output"][:6] == page["output"] and [x["stimulus_id"] for x in after["output"]] == list(range(10))
    _, gone = await call(client, "DELETE", STIM + "/output", alice)  # the explicit fresh start
    assert gone["status"] == "not_started" and gone["job_id"] is None
    _, third = await call(client, "POST", STIM, alice)
    assert third["job_id"] > first["job_id"]
    gate.release(10)
    assert (await status_of(client, alice, "complete"))["lines"] == 10


async def test_discarding_an_active_job_is_refused(client, alice, paths, gate, monkeypatch):
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 0.0)
    gate.total = 10
    seed_target(paths, [hardcoded(1)])
    await call(client, "POST", STIM, alice)
    resp = await client.delete(STIM + "/output", headers=alice)
    assert resp.status == 409 and (await resp.json())["code"] == "RESOURCE_CONFLICT"
    gate.release(10)
    assert (await status_of(client, alice, "complete"))["lines"] == 10


MISSING = {
    "no-generators": dict(generators=[]),
    "no-teacher": dict(generators=[hardcoded(1)], teacher=None),
}


@pytest.mark.parametrize("target", MISSING.values(), ids=MISSING.keys())
async def test_post_without_stim_configuration_is_400(client, alice, paths, target):
    seed_target(paths, **target)
    status, body = await call(client, "POST", STIM, alice)
    assert status == 400 and body["code"] == "INVALID_INPUT"
    assert body["message"].startswith("Target must have generators and teacher prompt configured")
    assert (await call(client, "GET", STIM, alice))[1]["status"] == "not_started"


async def test_post_with_an_unusable_generator_is_400_naming_it(client, alice, paths):
    seed_target(paths, [hardcoded(1), {"type": "from_dataset", "dataset": "nope", "numq": 3}])
    status, body = await call(client, "POST", STIM, alice)
    assert status == 400 and "generators[1] (from_dataset): unknown dataset 'nope'" in body["message"]


@pytest.mark.parametrize("path", ["/v1/repo/r1/targets/nope/stim", "/v1/repo/nope/targets/t1/stim"],
                         ids=["target", "repo"])
async def test_post_to_an_unknown_target_is_404(client, alice, paths, path):
    seed_target(paths, [hardcoded(1)])
    status, body = await call(client, "POST", path, alice)
    assert status == 404 and "nope" in body["message"]


async def test_post_ignores_a_body_and_needs_no_content_type(client, alice, paths):
    seed_target(paths, [hardcoded(2)])
    r = await client.post(STIM, headers={**alice, "Content-Type": "application/json"}, data=b"")
    assert r.status == 200


async def test_pages_stay_consistent_while_the_job_appends(client, alice, paths, gate):
    gate.total = 1500
    seed_target(paths, [hardcoded(1)])
    await call(client, "POST", STIM, alice)
    rng = random.Random(5)
    last_lines, released = 0, 0
    while True:
        if released < gate.total:
            step = min(rng.choice([1, 7, 50, 133, 260]), gate.total - released)
            gate.release(step)
            released += step
        for _ in range(4):  # pages taken while the writer may be between its appends
            limit = rng.choice([1, 10, 100, 1000])
            offset = rng.randrange(0, max(released, 1) + 20)
            status, body = await call(client, "GET", f"{STIM}/output?offset={offset}&limit={limit}", alice)
            assert status == 200
            lines = body["lines"]
            assert last_lines <= lines <= released and body["status"] in ("pending", "running", "complete")
            assert body["status"] != "pending" or lines == 0  # pending: claimed a moment later
            expect = list(range(offset, min(offset + limit, lines)))
            assert [line["stimulus_id"] for line in body["output"]] == expect
            assert all(line["pad"] == "x" * (line["stimulus_id"] % 37) for line in body["output"])
            assert body["has_more"] is (offset + len(expect) < lines)
            assert body["progress_percent"] == (100.0 if body["status"] == "complete"
                                                else round(lines / gate.total * 100, 2))
            last_lines = lines
        if last_lines == gate.total:
            break
    final = await status_of(client, alice, "complete")
    assert final["lines"] == 1500 and final["progress_percent"] == 100.0


class TestWebTierWithoutRunner:
    @pytest.fixture
    def settings(self, tmp_path):
        from tests.conftest import MASTER_KEY
        return Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False,
                              run_jobs=False, job_orphan_seconds=0)

    async def test_a_job_nobody_runs_fails_after_the_bound(self, client, alice, paths):
        seed_target(paths, [hardcoded(2)])
        _, queued = await call(client, "POST", STIM, alice)
        assert queued["status"] == "pending" and queued["job_id"]
        _, body = await call(client, "GET", STIM, alice)
        assert body["status"] == "failed" and "no job runner took this job up within 0 s" in body["error"]

    async def test_a_worker_elsewhere_runs_it(self, client, alice, paths, make_runner):
        seed_target(paths, [hardcoded(30)])
        await call(client, "POST", STIM, alice)
        await make_runner()  # e.g. `stimserver worker` on the same data directory
        assert (await status_of(client, alice, "complete"))["lines"] == 30


async def test_output_of_other_targets_is_served_while_a_job_fails(client, alice, paths, make_job, gate):
    gate.total, gate.fail_at = 3, 0
    seed_target(paths, [hardcoded(1)])
    make_job(lines=4, user="alice", repo="r1", target="other")
    await call(client, "POST", STIM, alice)
    gate.release(3)
    failed = await status_of(client, alice, "failed")
    assert failed["lines"] == 0 and "Traceback" not in failed["error"]
    _, body = await call(client, "GET", "/v1/repo/r1/targets/other/stim/output", alice)
    assert body["lines"] == 4 and body["status"] == "complete"
    assert (await call(client, "GET", "/v1/health", {}))[0] == 200


def test_the_runner_is_registered_only_when_jobs_run(settings):
    assert list(create_app(settings).cleanup_ctx)  # run_jobs defaults to on
    app = create_app(Settings.build(data_dir=settings.data_dir, master_key=settings.master_key, run_jobs=False))
    assert not list(app.cleanup_ctx)
    assert app[JOB_CONTROL].active is False  # still there: it submits jobs and stops them for deletes


@pytest.mark.parametrize("offset", ["57250484562325512192", "99999999999999999999", "9223372036854775808"])
async def test_a_page_offset_beyond_64_bits_is_the_same_422_on_both_paths(client, make_job, alice, offset):
    """The fast page path and the ordinary one refuse it alike (the fast path hands it over)."""
    make_job(lines=3)
    for query in (f"offset={offset}&limit=2", f"offset={offset}"):
        r = await client.get(f"{BASE}/output?{query}", headers=alice)
        body = await r.json()
        assert r.status == 422 and body["detail"][0]["loc"] == ["query", "offset"], body
